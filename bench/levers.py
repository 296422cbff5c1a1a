"""One lever at a time: how each choice of a pipeline moves the student's quality on held-out text.

    cd bench && python levers.py --ratio 0.8 --rows mlp mlp:refit=0 mlp+kd mlp+kd:lr=2e-4 \
        mlp+kd:lr=2e-4,T=2 mlp@mix+kd:lr=2e-4 [--kd-tokens 8192] [--calib-tokens 8192]

A row is ``<method>[:k=v,...][@data][+kd[:k=v,...]]``:

- method: svd, lillama, minitron, width, mlp, depth (see ``quality.METHODS``) with minitron
  options ``refit`` (0/1), ``seq`` (``refit_sequential``, 0/1), ``ridge``
  (``refit_ridge``), ``local`` (``local_distill_epochs``), ``local_lr``, ``layers`` (pins
  ``num_hidden_layers``: ``minitron:layers=26`` is the best 26-layer shape) and ``axes``
  (``/``-separated: ``minitron:axes=depth/mlp``), or auto
  (options ``rebuild``, 0/1, and ``probe_lr``: its probes' learning rate, 2e-4 by default;
  give the row's kd ``lr`` to probe as the kd that follows does);
- data: the calibration and kd text, ``english`` (default), ``mix`` (the service's default:
  English + teacher-sampled), ``synthetic`` (teacher-sampled only) or ``python`` (the language
  reference, one domain); sampled text is cached under ``.cache/bench-synthetic``;
- kd options: ``lr`` (peak learning rate), ``T`` (temperature), ``top_k`` (cached teacher
  logits), ``ce`` (cross-entropy share), ``hidden`` (weight of Minitron's intermediate-state
  loss), ``tokens``, ``batch``, ``warmup``. kd trains on the calibration text, as in the
  service, cycling over it when it asks for more tokens.

Rows with the same method, options and data share one compressed student (kd runs on copies),
so a table of kd levers costs one compression. Every row is measured in the same way
(:func:`slimforge.compression.evaluation.fidelity`) on general English
(``english-evaluation.txt``) and Python docs prose (``evaluation.txt``), neither of which shares
text with any calibration source. Prints one markdown table with the command, commit, machine
and date.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

import torch
from common import corpus_blocks, load_teacher, machine_line
from quality import EVAL_TEXTS, METHODS, current_commit, target_of

from slimforge.compression import compress, count_parameters
from slimforge.compression.configs import KdConfig
from slimforge.compression.distill.kd import distill_logits, teacher_topk
from slimforge.compression.evaluation import fidelity
from slimforge.compression.methods.auto.config import AutoConfig
from slimforge.compression.methods.minitron.config import PinnedShape

KD_KEYS = {
    "lr": ("learning_rate", float),
    "T": ("temperature", float),
    "top_k": ("top_k", int),
    "ce": ("ce_weight", float),
    "tokens": ("tokens", int),
    "batch": ("batch_size", int),
    "warmup": ("warmup_fraction", float),
    "hidden": ("hidden_weight", float),
}
# Every method a row may name: quality's, and auto with its defaults (option ``rebuild``).
ALL_METHODS: dict[str, Any] = {**METHODS, "auto": AutoConfig()}
METHOD_KEYS = {
    "refit": ("refit", lambda v: v not in ("0", "false")),
    "ridge": ("refit_ridge", float),
    "seq": ("refit_sequential", lambda v: v not in ("0", "false")),
    "local": ("local_distill_epochs", int),
    "local_lr": ("local_distill_lr", float),
    "rebuild": ("rebuild", lambda v: v not in ("0", "false")),
    "probe_lr": ("probe_learning_rate", float),
    "layers": ("shape", lambda v: PinnedShape(num_hidden_layers=int(v))),
    "axes": ("axes", lambda v: v.split("/")),
}


def options(text: str, keys: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """``k=v,k=v`` -> {field: typed value}; an unknown key is an error naming the known ones."""
    out: dict[str, Any] = {}
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        if key not in keys:
            raise SystemExit(f"unknown option {key!r} in {text!r}; known: {', '.join(keys)}")
        field, cast = keys[key]
        out[field] = cast(value)
    return out


def parse_row(spec: str) -> tuple[str, dict[str, Any], str, dict[str, Any] | None]:
    """(method, method options, data, kd options or None when the row has no kd)."""
    head, plus, kd_text = spec.partition("+kd")
    head, _, data = head.partition("@")
    name, _, method_text = head.partition(":")
    if name not in ALL_METHODS:
        raise SystemExit(f"unknown method {name!r} in {spec!r}; known: {', '.join(ALL_METHODS)}")
    kd = options(kd_text.lstrip(":"), KD_KEYS) if plus else None
    return name, options(method_text, METHOD_KEYS), data or "english", kd


class Lab:
    """The teacher, the evaluation blocks, and the data and compressed students built so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.teacher, self.tokenizer = load_teacher()
        self.teacher.requires_grad_(False)
        self.evaluation = {
            name: corpus_blocks(
                f, self.tokenizer, seq_len=args.seq_len, max_tokens=args.eval_tokens
            )
            for name, f in EVAL_TEXTS.items()
        }
        self.data: dict[tuple[str, int], torch.Tensor] = {}
        self.students: dict[str, tuple[torch.nn.Module, float]] = {}

    def blocks(self, kind: str, tokens: int, seed: int) -> torch.Tensor:
        """[n, seq_len] calibration blocks of one source (sampling seeded by ``seed``)."""
        if (kind, seed) not in self.data:
            from quality import data_blocks

            got = data_blocks(kind, self.teacher, self.tokenizer, tokens=tokens,
                              seq_len=self.args.seq_len, seed=seed)  # fmt: skip
            self.data[(kind, seed)] = got
        return self.data[(kind, seed)]

    def student(self, name: str, method_opts: dict[str, Any], data: str) -> tuple[Any, float]:
        """The compressed student of one method, options and data (built once) and seconds."""
        key = f"{name}{sorted(method_opts.items())}@{data}"
        if key not in self.students:
            calib = self.blocks(data, self.args.calib_tokens, seed=0)
            config = ALL_METHODS[name].model_copy(update=method_opts)
            model = copy.deepcopy(self.teacher).requires_grad_(True)
            t0 = time.monotonic()
            target = target_of(name, self.teacher, self.args.ratio)
            compress(model, config, blocks=calib, target_params=target)
            self.students[key] = (model, time.monotonic() - t0)
        return self.students[key]

    def measure(self, student: torch.nn.Module) -> list[str]:
        """English, then docs: ratio [95 % interval], KL nats/token, top-1 agreement."""
        cells = []
        for name in ("english", "docs"):
            r = fidelity(self.teacher, student, self.evaluation[name], n_resamples=1000)
            ci = r.perplexity_ratio_interval
            lo, hi = (ci.low, ci.high) if ci is not None else (float("nan"), float("nan"))
            cells += [f"**{r.perplexity_ratio:.3f}** ({lo:.2f}-{hi:.2f})",
                      f"{r.kl_per_token:.3f}", f"{r.top1_agreement:.1%}"]  # fmt: skip
        return cells

    def row(self, spec: str) -> str:
        name, method_opts, data, kd_opts = parse_row(spec)
        base, method_s = self.student(name, method_opts, data)
        params = count_parameters(base)
        if kd_opts is None:
            cells = " | ".join(self.measure(base))
            return f"| {spec} | {params:,} | {cells} | {method_s:.0f} | - | - |"
        kd = KdConfig(**{"tokens": self.args.kd_tokens, **kd_opts})
        student = copy.deepcopy(base)
        # kd reads the calibration text, as in the service (cycling over it for more tokens).
        kd_blocks = self.blocks(data, self.args.calib_tokens, seed=0)
        t0 = time.monotonic()
        cache = teacher_topk(self.teacher, kd_blocks, k=kd.top_k) if kd.top_k else None
        result = distill_logits(student, kd_blocks, kd, teacher=None if cache else self.teacher,
                                teacher_cache=cache)  # fmt: skip
        kd_s = time.monotonic() - t0
        loss = f"{result.loss_first:.3f} → {result.loss_last:.3f}"
        cells = " | ".join(self.measure(student))
        return f"| {spec} | {params:,} | {cells} | {method_s:.0f} | {kd_s:.0f} | {loss} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--rows", nargs="+", required=True)
    parser.add_argument("--calib-tokens", type=int, default=8192)
    parser.add_argument("--kd-tokens", type=int, default=8192)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    for spec in args.rows:
        parse_row(spec)  # a typo fails now, not after an hour
    commit = current_commit()
    torch.manual_seed(0)
    lab = Lab(args)
    teacher = {k: fidelity(lab.teacher, lab.teacher, v).teacher_perplexity
               for k, v in lab.evaluation.items()}  # fmt: skip
    rows = []
    for spec in args.rows:
        rows.append(lab.row(spec))
        print(rows[-1], flush=True)
    print("\ncommand: " + " ".join(["python", *sys.argv]))
    print(f"commit: {commit}; {machine_line()}")
    print(f"target {args.ratio:.0%} of the parameters; method calibration {args.calib_tokens:,} "
          f"tokens, kd {args.kd_tokens:,} tokens (over the same text) unless the row says; "
          f"sequence {args.seq_len}; "
          f"evaluation {args.eval_tokens:,} tokens of each text; teacher perplexity: "
          + ", ".join(f"{k} {v:.3f}" for k, v in teacher.items()))  # fmt: skip
    print(
        "\n| row | parameters | English ratio (95 % CI) | English KL | English top-1 | docs ratio "
        "(95 % CI) | docs KL | docs top-1 | method (s) | kd (s) | kd loss |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
