"""Compression pipelines with and without the `kd` stage on SmolLM2-135M-Instruct.

    .venv/bin/python bench/kd_quality.py [--ratios 0.8 0.7] [--pipelines svd lillama] \
        [--kd-tokens 65536] [--kd-lr 5e-5] [--calib-tokens 16384] [--seq-len 256]

For every ratio and pipeline: compress (the method's default settings, calibration on the first
--calib-tokens of data/corpus/calibration.txt), evaluate, then distil the logits of the original
model into the student for --kd-tokens tokens of the same text (each --kd-lr from the same
compressed student) and evaluate again on the disjoint data/corpus/evaluation.txt. Prints a
markdown table. On 2 CPU cores one 1k-token KD step takes about 16 s.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch
from common import PeakRss, corpus_blocks, load_teacher, machine_line

from compression import compress, count_parameters, perplexity, resolve_target
from compression.configs import KdConfig, LillamaConfig, SvdConfig
from compression.distill.kd import distill_logits

PIPELINES: dict[str, Any] = {
    "svd": SvdConfig(),
    "lillama": LillamaConfig(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.7])
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--calib-tokens", type=int, default=16384)
    parser.add_argument("--kd-tokens", type=int, default=65536)
    parser.add_argument("--kd-lr", type=float, nargs="+", default=[KdConfig().learning_rate])
    parser.add_argument("--kd-batch", type=int, default=4)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()

    torch.manual_seed(0)
    teacher, tokenizer = load_teacher()
    teacher.requires_grad_(False)
    calib = corpus_blocks(
        "calibration", tokenizer, seq_len=args.seq_len, max_tokens=args.calib_tokens
    )
    kd_blocks = corpus_blocks(
        "calibration", tokenizer, seq_len=args.seq_len, max_tokens=args.kd_tokens
    )
    evaluation = corpus_blocks(
        "evaluation", tokenizer, seq_len=args.seq_len, max_tokens=args.eval_tokens
    )
    total = count_parameters(teacher)
    teacher_ppl = perplexity(teacher, evaluation)
    print(f"teacher perplexity {teacher_ppl:.2f}", flush=True)

    rows: list[tuple[str, int, float, float, float, int, int]] = [
        ("teacher (dense)", total, teacher_ppl, 1.0, 0.0, 0, 0)
    ]
    for ratio in args.ratios:
        target = resolve_target(total, ratio=ratio)
        for name in args.pipelines:
            student = copy.deepcopy(teacher)
            student.requires_grad_(True)
            with PeakRss() as rss:
                t0 = time.monotonic()
                result = compress(student, PIPELINES[name], blocks=calib, target_params=target)
                seconds = time.monotonic() - t0
            ppl = perplexity(student, evaluation)
            label = f"{name} @ {ratio:.0%}"
            rows.append(
                (
                    label,
                    count_parameters(student),
                    ppl,
                    ppl / teacher_ppl,
                    seconds,
                    rss.peak,
                    result.tokens_used,
                )
            )
            print(f"done: {label} ppl {ppl:.2f} in {seconds:.0f} s", flush=True)
            for lr in args.kd_lr:
                kd_student = copy.deepcopy(student)
                config = KdConfig(tokens=args.kd_tokens, learning_rate=lr, batch_size=args.kd_batch)
                with PeakRss() as rss:
                    t0 = time.monotonic()
                    kd = distill_logits(kd_student, kd_blocks, config, teacher=teacher)
                    kd_seconds = time.monotonic() - t0
                kd_ppl = perplexity(kd_student, evaluation)
                kd_label = f"{label} → kd (lr {lr:g})"
                rows.append(
                    (
                        kd_label,
                        count_parameters(kd_student),
                        kd_ppl,
                        kd_ppl / teacher_ppl,
                        seconds + kd_seconds,
                        rss.peak,
                        result.tokens_used + kd.tokens,
                    )
                )
                print(
                    f"done: {kd_label} ppl {kd_ppl:.2f}, kd {kd_seconds:.0f} s, loss "
                    f"{kd.loss_first:.3f} -> {kd.loss_last:.3f}",
                    flush=True,
                )
                del kd_student
            del student

    print("\n" + machine_line())
    print(
        f"calibration {calib.numel()} tokens for the method, {kd_blocks.numel()} distinct "
        f"tokens for kd ({args.kd_tokens} trained, batch {args.kd_batch} x {args.seq_len}); "
        f"evaluation {evaluation.numel()} tokens\n"
    )
    print(
        "| pipeline | parameters | eval perplexity | vs teacher | total time (s) "
        "| peak RSS (GiB) | tokens |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, params, ppl, r, seconds, peak, tokens in rows:
        print(
            f"| {label} | {params:,} | {ppl:,.2f} | {r:,.2f} | {seconds:.0f} "
            f"| {peak / 2**30:.2f} | {tokens:,} |"
        )


if __name__ == "__main__":
    main()
