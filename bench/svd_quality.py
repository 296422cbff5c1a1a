"""Quality of the training-free `svd` method on SmolLM2-135M-Instruct, with and without
activation whitening, at several parameter ratios. Prints a markdown table.

    SLIMFORGE_SMOLLM2_DIR=$(.venv/bin/slimforge fetch-demo-model --dest .cache/models) \
        .venv/bin/python bench/svd_quality.py [--ratios 0.9 0.8] [--calib-tokens 16384]

Calibration: data/corpus/calibration.txt; evaluation: the disjoint data/corpus/evaluation.txt.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from slimforge.compression import (
    ModelSource,
    SvdConfig,
    TextSource,
    compress,
    count_parameters,
    load_model,
    load_texts,
    perplexity,
    resolve_target,
    token_blocks,
)

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.9, 0.8])
    parser.add_argument("--calib-tokens", type=int, default=16384)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--seq-len", type=int, default=512)
    args = parser.parse_args()
    folder = os.environ.get("SLIMFORGE_SMOLLM2_DIR")
    if not folder:
        raise SystemExit("set SLIMFORGE_SMOLLM2_DIR (slimforge fetch-demo-model prints it)")

    torch.manual_seed(0)
    teacher, tokenizer = load_model(ModelSource(path=folder, gguf_file=GGUF))
    calib = token_blocks(
        load_texts(TextSource(path=str(CORPUS / "calibration.txt"))),
        tokenizer,
        seq_len=args.seq_len,
        max_tokens=args.calib_tokens,
    )
    evaluation = token_blocks(
        load_texts(TextSource(path=str(CORPUS / "evaluation.txt"))),
        tokenizer,
        seq_len=args.seq_len,
        max_tokens=args.eval_tokens,
    )
    total = count_parameters(teacher)
    t0 = time.monotonic()
    teacher_ppl = perplexity(teacher, evaluation)
    eval_seconds = time.monotonic() - t0

    rows = [("teacher (dense)", total, teacher_ppl, 1.0, 0.0)]
    for ratio in args.ratios:
        for whitening in (True, False):
            student = copy.deepcopy(teacher)
            target = resolve_target(total, ratio=ratio)
            t0 = time.monotonic()
            compress(student, SvdConfig(whitening=whitening), blocks=calib, target_params=target)
            seconds = time.monotonic() - t0
            ppl = perplexity(student, evaluation)
            label = f"svd {'whitened' if whitening else 'plain'} @ {ratio:.0%}"
            rows.append((label, count_parameters(student), ppl, ppl / teacher_ppl, seconds))
            del student

    print(
        f"date: {datetime.now(UTC):%Y-%m-%d}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, no GPU"
    )
    print(
        f"calibration {calib.numel()} tokens, evaluation {evaluation.numel()} tokens "
        f"(seq_len {args.seq_len}); one evaluation pass takes {eval_seconds:.0f} s\n"
    )
    print("| model | parameters | eval perplexity | vs teacher | compress time (s) |")
    print("|---|---:|---:|---:|---:|")
    for label, params, ppl, ratio_ppl, seconds in rows:
        print(f"| {label} | {params:,} | {ppl:,.2f} | {ratio_ppl:,.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
