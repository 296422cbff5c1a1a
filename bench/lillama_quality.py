"""Low-rank methods side by side on SmolLM2-135M-Instruct: plain SVD truncation, whitened `svd`
(uniform and energy allocation) and `lillama` with every rank strategy, at each ratio.
Prints a markdown table (parameters, eval perplexity, wall time, peak RSS, calibration tokens).

    .venv/bin/python bench/lillama_quality.py [--ratios 0.8 0.7] [--calib-tokens 16384] \
        [--seq-len 256] [--strategies uniform bottom top energy] [--lr 8.6e-5] \
        [--svd plain whitened energy] [--gguf .cache/models/smollm2/...gguf]

Each lillama row takes about 7 minutes on 2 CPU cores with the defaults, each svd row 2.

Calibration: data/corpus/calibration.txt; evaluation: the disjoint data/corpus/evaluation.txt.
Peak RSS is the largest resident set sampled while that row's compression ran (whole process,
teacher copy included).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch
from common import GGUF, PeakRss, corpus_blocks, load_teacher, machine_line, rss_bytes

from slimforge.compression import SvdConfig, compress, count_parameters, perplexity, resolve_target
from slimforge.compression.configs import LillamaConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.7])
    parser.add_argument("--calib-tokens", type=int, default=16384)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, nargs="+", default=[8.6e-5])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--strategies", nargs="*", default=["uniform", "bottom", "top", "energy"])
    parser.add_argument(
        "--svd", nargs="*", default=["plain", "whitened", "energy"], help="svd rows to run"
    )
    parser.add_argument(
        "--plain-init",
        action="store_true",
        help="add a lillama row (uniform ranks) initialised by plain weight SVD",
    )
    parser.add_argument("--gguf", type=Path, default=GGUF)
    args = parser.parse_args()

    torch.manual_seed(0)
    teacher, tokenizer = load_teacher(args.gguf)
    calib = corpus_blocks(
        "calibration", tokenizer, seq_len=args.seq_len, max_tokens=args.calib_tokens
    )
    evaluation = corpus_blocks(
        "evaluation", tokenizer, seq_len=args.seq_len, max_tokens=args.eval_tokens
    )
    total = count_parameters(teacher)
    t0 = time.monotonic()
    teacher_ppl = perplexity(teacher, evaluation)
    eval_seconds = time.monotonic() - t0

    svd_rows = {
        "plain": ("svd plain", SvdConfig(whitening=False)),
        "whitened": ("svd whitened, uniform", SvdConfig()),
        "energy": ("svd whitened, energy", SvdConfig(allocation="energy")),
    }
    configs: list[tuple[str, Any]] = [svd_rows[k] for k in args.svd]
    for strategy in args.strategies:
        for lr in args.lr:
            cfg = LillamaConfig(
                rank_strategy=strategy,
                learning_rate=lr,
                batch_size=args.batch_size,
                epochs=args.epochs,
            )
            label = f"lillama {strategy}" + (f", lr {lr:g}" if len(args.lr) > 1 else "")
            configs.append((label, cfg))

    if args.plain_init:
        plain = LillamaConfig(whitening=False, batch_size=args.batch_size, epochs=args.epochs)
        configs.append(("lillama uniform, plain-SVD init", plain))

    rows = [("teacher (dense)", total, teacher_ppl, 1.0, 0.0, rss_bytes(), 0, "")]
    for ratio in args.ratios:
        target = resolve_target(total, ratio=ratio)
        for label, cfg in configs:
            student = copy.deepcopy(teacher)
            with PeakRss() as rss:
                t0 = time.monotonic()
                result = compress(student, cfg, blocks=calib, target_params=target)
                seconds = time.monotonic() - t0
            ppl = perplexity(student, evaluation)
            note = ""
            if "mean_loss_before" in result.details:
                note = (
                    f"block loss {result.details['mean_loss_before']:.4f} -> "
                    f"{result.details['mean_loss_after']:.4f}"
                )
            rows.append(
                (
                    f"{label} @ {ratio:.0%}",
                    count_parameters(student),
                    ppl,
                    ppl / teacher_ppl,
                    seconds,
                    rss.peak,
                    result.tokens_used,
                    note,
                )
            )
            print(
                f"done: {label} @ {ratio:.0%} ppl {ppl:.2f} in {seconds:.0f} s {note}", flush=True
            )
            del student

    print("\n" + machine_line())
    print(
        f"calibration {calib.numel()} tokens, evaluation {evaluation.numel()} tokens "
        f"(seq_len {args.seq_len}); lillama batch {args.batch_size} sequences, "
        f"{args.epochs} epoch(s); one evaluation pass takes {eval_seconds:.0f} s\n"
    )
    print(
        "| model | parameters | eval perplexity | vs teacher | compress time (s) "
        "| peak RSS (GiB) | calibration tokens | notes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, params, ppl, ratio_ppl, seconds, peak, tokens, note in rows:
        print(
            f"| {label} | {params:,} | {ppl:,.2f} | {ratio_ppl:,.2f} | {seconds:.0f} "
            f"| {peak / 2**30:.2f} | {tokens:,} | {note} |"
        )


if __name__ == "__main__":
    main()
