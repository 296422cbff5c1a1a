"""Compression pipelines on SmolLM2-135M-Instruct, measured against the teacher on two held-out
texts: Python documentation prose (in-domain for the `python` calibration) and general English.

    .venv/bin/python bench/quality.py [--ratios 0.8 0.7] \
        [--pipelines svd+kd lillama+kd minitron+kd] [--data mix] [--kd-tokens 32768]

A pipeline is a method name (svd, lillama, minitron, width, mlp, depth, auto), optionally
followed by `+kd`; a `+kd` pipeline prints two rows, the method alone and after kd (the same
student, measured before and after). Every row is measured in the same way
(:func:`slimforge.compression.evaluation.fidelity`): perplexity ratio student / teacher with its
95 % bootstrap interval, KL(teacher ‖ student) in nats per token and top-1 agreement, on
`data/corpus/evaluation.txt` (Python docs) and `data/corpus/english-evaluation.txt` (general
English), neither of which shares text with any calibration source (`data/corpus/LICENSE.md`).
Calibration and kd text (`--data`): `python` (calibration.txt), `english`
(english-calibration.txt), `synthetic` (sampled from the teacher), `mix` (the service's default
general mixture: English + synthetic). Prints one markdown table, with the command, commit,
machine and date.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from common import ROOT, PeakRss, corpus_blocks, load_teacher, machine_line

from slimforge.compression import compress, count_parameters, resolve_target
from slimforge.compression.configs import KdConfig, LillamaConfig, MinitronConfig, SvdConfig
from slimforge.compression.distill.kd import distill_logits, teacher_topk
from slimforge.compression.evaluation import fidelity
from slimforge.compression.lowrank import LowRankLinear
from slimforge.compression.pruning.arch import candidate_shapes
from slimforge.compression.pruning.layout import arch_of

METHODS: dict[str, Any] = {
    "svd": SvdConfig(),
    "lillama": LillamaConfig(),
    "minitron": MinitronConfig(),
    "width": MinitronConfig(axes=["heads", "mlp", "hidden"]),
    "mlp": MinitronConfig(axes=["mlp"]),
    "depth": MinitronConfig(axes=["depth"]),
}
EVAL_TEXTS = {"docs": "evaluation", "english": "english-evaluation"}


@dataclass
class Setup:
    """What every pipeline of one run shares."""

    teacher: torch.nn.Module
    tokenizer: Any
    calib: torch.Tensor  # [n, seq_len] method calibration tokens
    kd_blocks: torch.Tensor  # [n, seq_len] kd tokens
    evaluation: dict[str, torch.Tensor]  # held-out text name -> [n, seq_len]
    kd: KdConfig


def data_blocks(kind: str, teacher: Any, tokenizer: Any, *, tokens: int, seq_len: int, seed: int):
    """Calibration/kd token blocks [n, seq_len] of one source (see the module docstring)."""
    if kind == "python":
        return corpus_blocks("calibration", tokenizer, seq_len=seq_len, max_tokens=tokens)
    if kind == "english":
        return corpus_blocks("english-calibration", tokenizer, seq_len=seq_len, max_tokens=tokens)
    from slimforge.compression.general_calibration import general_calibration_blocks

    share = {"synthetic": 1.0, "mix": 0.5}[kind]
    cache = ROOT / ".cache" / "bench-synthetic"  # sampled once per model, seed and size
    return general_calibration_blocks(
        teacher, tokenizer, tokens=tokens, seq_len=seq_len, seed=seed, synthetic_share=share,
        cache_dir=cache,
    )  # fmt: skip


def target_of(name: str, teacher: torch.nn.Module, ratio: float) -> int:
    """The parameter target; for `depth`, the nearest count whole layers reach."""
    target = resolve_target(count_parameters(teacher), ratio=ratio)
    if name == "depth":
        return candidate_shapes(arch_of(teacher), target, axes=["depth"], tolerance=0.1)[0].params
    return target


def shape_of(model: torch.nn.Module) -> str:
    c = model.config
    if any(isinstance(m, LowRankLinear) for m in model.modules()):
        return "low-rank"
    return (
        f"L{c.num_hidden_layers} H{c.hidden_size} I{c.intermediate_size} h{c.num_attention_heads}"
    )


def measure(setup: Setup, student: torch.nn.Module) -> list[str]:
    """Ratio [interval], KL, top-1 on each held-out text, as table cells."""
    cells = []
    for blocks in setup.evaluation.values():
        r = fidelity(setup.teacher, student, blocks, n_resamples=1000)
        ci = r.perplexity_ratio_interval
        lo, hi = (ci.low, ci.high) if ci is not None else (float("nan"), float("nan"))
        cells += [
            f"{r.student_perplexity:.2f}",
            f"**{r.perplexity_ratio:.2f}** ({lo:.2f}-{hi:.2f})",
            f"{r.kl_per_token:.3f}",
            f"{r.top1_agreement:.1%}",
        ]
    return cells


def run_pipeline(setup: Setup, spec: str, ratio: float) -> list[str]:
    """Rows of one pipeline at one ratio (the method alone, and after kd when asked)."""
    name, _, tail = spec.partition("+")
    student = copy.deepcopy(setup.teacher).requires_grad_(True)
    total = count_parameters(setup.teacher)
    rows = []
    with PeakRss() as rss:
        t0 = time.monotonic()
        details = run_method(setup, student, name, target_of(name, setup.teacher, ratio))
        method_s = time.monotonic() - t0
        params = count_parameters(student)
        head = f"| {name} | {ratio:.0%} | {params:,} ({params / total:.1%}) | {shape_of(student)}"
        rows.append(f"{head} | {' | '.join(measure(setup, student))} | {method_s:.0f} | - |")
        print(rows[-1], details, flush=True)
        if tail == "kd":
            t0 = time.monotonic()
            cache = None
            if setup.kd.top_k is not None:
                cache = teacher_topk(setup.teacher, setup.kd_blocks, k=setup.kd.top_k)
            kd = distill_logits(
                student,
                setup.kd_blocks,
                setup.kd,
                teacher=None if cache is not None else setup.teacher,
                teacher_cache=cache,
            )
            kd_s = time.monotonic() - t0
            cells = " | ".join(measure(setup, student))
            rows.append(
                f"| {name} → kd | {ratio:.0%} | | | {cells} | {method_s:.0f} | {kd_s:.0f} |"
            )
            print(rows[-1], f"kd loss {kd.loss_first:.3f} -> {kd.loss_last:.3f}", flush=True)
    print(f"peak RSS {rss.peak / 2**30:.2f} GiB", flush=True)
    return rows


def run_method(setup: Setup, student: torch.nn.Module, name: str, target: int) -> dict[str, Any]:
    if name == "auto":
        from slimforge.compression.methods.auto.config import AutoConfig

        # Its probes train at the rate of the kd that follows them, as in an auto job.
        config = AutoConfig(probe_learning_rate=setup.kd.learning_rate)
        result = compress(student, config, blocks=setup.calib, target_params=target)
        rows = result.details.get("candidates", [])
        return {
            "winner": result.details.get("winner"),
            "candidates": {r["name"]: (r["status"], r.get("kl")) for r in rows},
        }
    result = compress(student, METHODS[name], blocks=setup.calib, target_params=target)
    return {"tokens": result.tokens_used}


def current_commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def header(args: argparse.Namespace, setup: Setup, commit: str) -> str:
    kd = setup.kd
    return "\n".join(
        [
            "command: " + " ".join(["python", *sys.argv]),
            f"commit: {commit}; {machine_line()}",
            f"calibration/kd text: {args.data}; method calibration {setup.calib.numel():,} "
            f"tokens; kd {kd.tokens:,} tokens (lr {kd.learning_rate:g}, T {kd.temperature:g}, "
            f"batch {kd.batch_size} x {args.seq_len}, top_k {kd.top_k}); evaluation "
            + ", ".join(f"{k} {v.numel():,} tokens" for k, v in setup.evaluation.items()),
            "",
            "| pipeline | target | parameters | shape | docs ppl | docs ratio (95 % CI) | docs KL "
            "| docs top-1 | English ppl | English ratio (95 % CI) | English KL | English top-1 "
            "| method (s) | kd (s) |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.7])
    parser.add_argument("--pipelines", nargs="+", default=["svd+kd", "lillama+kd", "minitron+kd"])
    parser.add_argument("--data", choices=["python", "english", "synthetic", "mix"], default="mix")
    parser.add_argument("--calib-tokens", type=int, default=16384)
    parser.add_argument("--kd-tokens", type=int, default=32768)
    parser.add_argument("--kd-lr", type=float, default=KdConfig().learning_rate)
    parser.add_argument("--kd-temperature", type=float, default=1.0)
    parser.add_argument("--kd-top-k", type=int, default=None)
    parser.add_argument("--kd-batch", type=int, default=4)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    commit = current_commit()  # the code that runs, read before anything lands meanwhile

    torch.manual_seed(0)
    teacher, tokenizer = load_teacher()
    teacher.requires_grad_(False)
    seq = args.seq_len
    calib = data_blocks(
        args.data, teacher, tokenizer, tokens=args.calib_tokens, seq_len=seq, seed=0
    )
    kd_blocks = data_blocks(
        args.data, teacher, tokenizer, tokens=args.kd_tokens, seq_len=seq, seed=1
    )
    evaluation = {
        name: corpus_blocks(file, tokenizer, seq_len=seq, max_tokens=args.eval_tokens)
        for name, file in EVAL_TEXTS.items()
    }
    kd = KdConfig(
        tokens=args.kd_tokens,
        learning_rate=args.kd_lr,
        temperature=args.kd_temperature,
        top_k=args.kd_top_k,
        batch_size=args.kd_batch,
    )
    setup = Setup(teacher, tokenizer, calib, kd_blocks, evaluation, kd)
    teacher_ppl = {
        k: fidelity(teacher, teacher, v).teacher_perplexity for k, v in evaluation.items()
    }
    print("teacher perplexity: " + ", ".join(f"{k} {v:.3f}" for k, v in teacher_ppl.items()))
    rows = [row for r in args.ratios for p in args.pipelines for row in run_pipeline(setup, p, r)]
    print("\n" + header(args, setup, commit))
    print("\n".join(rows))
    print("teacher perplexity: " + ", ".join(f"{k} {v:.3f}" for k, v in teacher_ppl.items()))


if __name__ == "__main__":
    main()
