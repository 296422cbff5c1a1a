"""Pruning and low-rank pipelines, each without and with the `kd` stage, on SmolLM2-135M-Instruct.

    .venv/bin/python bench/kd_quality.py [--ratios 0.8 0.7] \
        [--pipelines depth width minitron lillama svd] [--kd-tokens 32768] [--kd-lr 5e-5] \
        [--calib-tokens 16384] [--seq-len 256]

For every ratio and pipeline: compress with the method's defaults (calibration: the first
--calib-tokens of data/corpus/calibration.txt), evaluate, then distil the original model's logits
into the student for --kd-tokens tokens of the same text and evaluate again on the disjoint
data/corpus/evaluation.txt. Pipelines: `depth` (minitron, layers only: whole layers cannot land
within 1 % of an arbitrary ratio, so its target is the nearest count whole layers reach),
`width` (minitron, heads + MLP + hidden), `minitron` (searched width + depth), `lillama`, `svd`.
Prints a markdown table. On 2 CPU cores one 1k-token KD step takes about 14 s.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch
from common import PeakRss, corpus_blocks, load_teacher, machine_line

from slimforge.compression import compress, count_parameters, perplexity, resolve_target
from slimforge.compression.configs import KdConfig, LillamaConfig, MinitronConfig, SvdConfig
from slimforge.compression.distill.kd import distill_logits
from slimforge.compression.pruning.arch import candidate_shapes
from slimforge.compression.pruning.layout import arch_of

PIPELINES: dict[str, Any] = {
    "depth": MinitronConfig(axes=["depth"]),
    "width": MinitronConfig(axes=["heads", "mlp", "hidden"]),
    "minitron": MinitronConfig(),
    "lillama": LillamaConfig(),
    "svd": SvdConfig(),
}


def _target(name: str, teacher: torch.nn.Module, ratio: float) -> int:
    total = count_parameters(teacher)
    target = resolve_target(total, ratio=ratio)
    if name == "depth":  # the count whole layers reach nearest to the ratio
        near = candidate_shapes(arch_of(teacher), target, axes=["depth"], tolerance=0.1)
        return near[0].params
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.7])
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--calib-tokens", type=int, default=16384)
    parser.add_argument("--kd-tokens", type=int, default=32768)
    parser.add_argument("--kd-lr", type=float, default=KdConfig().learning_rate)
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
    kd_config = KdConfig(tokens=args.kd_tokens, learning_rate=args.kd_lr, batch_size=args.kd_batch)

    rows: list[str] = []
    for ratio in args.ratios:
        for name in args.pipelines:
            target = _target(name, teacher, ratio)
            student = copy.deepcopy(teacher).requires_grad_(True)
            with PeakRss() as rss:
                t0 = time.monotonic()
                compress(student, PIPELINES[name], blocks=calib, target_params=target)
                method_s = time.monotonic() - t0
                ppl = perplexity(student, evaluation)
                print(f"done: {name} @ {ratio:.0%} ppl {ppl:.2f} in {method_s:.0f} s", flush=True)
                t0 = time.monotonic()
                kd = distill_logits(student, kd_blocks, kd_config, teacher=teacher)
                kd_s = time.monotonic() - t0
            kd_ppl = perplexity(student, evaluation)
            params = count_parameters(student)
            shape = ""
            if isinstance(PIPELINES[name], MinitronConfig):
                c = student.config
                shape = (
                    f"L{c.num_hidden_layers} H{c.hidden_size} I{c.intermediate_size} "
                    f"heads {c.num_attention_heads}"
                )
            row = (
                f"| {name} | {params:,} ({params / total:.1%}) | {shape} | {ppl:,.2f} "
                f"| {ppl / teacher_ppl:.2f} | {kd_ppl:,.2f} | {kd_ppl / teacher_ppl:.2f} "
                f"| {method_s:.0f} | {kd_s:.0f} | {rss.peak / 2**30:.2f} |"
            )
            rows.append(row)
            print(
                f"done: {name} @ {ratio:.0%} → kd ppl {kd_ppl:.2f}, kd {kd_s:.0f} s, loss "
                f"{kd.loss_first:.3f} -> {kd.loss_last:.3f}\n{row}",
                flush=True,
            )
            del student

    print("\n" + machine_line())
    print(
        f"teacher perplexity {teacher_ppl:.2f} ({total:,} parameters); method calibration "
        f"{calib.numel():,} tokens; kd {kd_config.tokens:,} tokens "
        f"(lr {kd_config.learning_rate:g}, batch {args.kd_batch} x {args.seq_len}, "
        f"{kd_blocks.numel():,} distinct); evaluation "
        f"{evaluation.numel():,} tokens of the disjoint text\n"
    )
    print(
        "| pipeline | parameters | shape | perplexity | vs teacher | + kd perplexity "
        "| vs teacher | method (s) | kd (s) | peak RSS (GiB) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
