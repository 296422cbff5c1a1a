"""One ``auto`` candidate (torch): built on a copy of the teacher, probed by a short kd, scored
by KL to the teacher on held-back calibration text."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimforge.compression.configs import KdConfig
from slimforge.compression.distill.kd import distill_logits
from slimforge.compression.evaluation import fidelity
from slimforge.compression.lowrank import count_parameters
from slimforge.compression.methods.auto.config import candidate_config
from slimforge.compression.methods.method import MethodResult, compress
from slimforge.compression.methods.minitron.config import MinitronConfig
from slimforge.compression.methods.minitron.measure import Measurements
from slimforge.compression.methods.minitron.method import MinitronMethod
from slimforge.compression.parameters import MethodParameters
from slimforge.compression.progress import Reporter

__all__ = ["Candidate", "Trial", "method_input", "model_shape", "split_blocks"]


def split_blocks(blocks: torch.Tensor, score_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training blocks and held-back scoring blocks (the last ones, at most a quarter)."""
    n, seq_len = blocks.shape
    held = min(max(1, score_tokens // seq_len), max(1, n // 4))
    if n < 2:
        raise ValueError("auto needs at least 2 calibration blocks (train + score)")
    return blocks[: n - held], blocks[n - held :]


def method_input(
    config: MethodParameters, train: torch.Tensor, held: torch.Tensor
) -> tuple[MethodParameters, torch.Tensor]:
    """What a candidate's method calibrates on: the training blocks, and for minitron also the
    held-back ones, as its shape-search text (``search_tokens`` = theirs). Minitron then
    measures importance and fits its refit on exactly the training blocks: the refit needs 4
    tokens per MLP neuron, and a candidate given the training blocks alone would keep a
    quarter of them back again and, on short text, be pruned unrefit (measured on SmolLM2 at
    -30 %: unrefit, the depth search picks a 22-layer shape; refit, it picks the MLP-only
    shape, which wins after kd). The held-back blocks then choose minitron's shape (the best
    of its few searched shapes by perplexity) as well as score the candidates, which flatters
    minitron's score a little against svd and lillama, which never see them
    (``architecture: "any"`` only)."""
    if isinstance(config, MinitronConfig):
        update = {"search_tokens": int(held.numel())}
        return config.model_copy(update=update), torch.cat([train, held])
    return config, train


def model_shape(model: nn.Module) -> str:
    """A pruned model's shape in words, or "low-rank" (factorised layers, or no config)."""
    c = getattr(model, "config", None)
    if any(type(m).__name__ == "LowRankLinear" for m in model.modules()) or c is None:
        return "low-rank"
    return (
        f"layers {c.num_hidden_layers}, hidden {c.hidden_size}, mlp {c.intermediate_size}, "
        f"heads {c.num_attention_heads}"
    )


@dataclass
class Candidate:
    """A scored candidate: its row (for events, metrics and the card), the probed student and
    what its method reported."""

    row: dict[str, Any]
    student: nn.Module | None = None
    result: MethodResult | None = None


@dataclass
class Trial:
    """What every candidate of one ``auto`` run shares: the teacher (never modified), its
    training and held-back blocks [n, t] and [m, t], the probe, the target, and minitron's
    measurements of the teacher (one for all minitron candidates: same model, same blocks)."""

    teacher: nn.Module
    train: torch.Tensor
    held: torch.Tensor
    probe: KdConfig
    target_params: int
    reporter: Reporter
    measured_once: Measurements

    def run(self, name: str, seen: dict[str, str], *, last_minitron: bool) -> Candidate:
        """Build, probe and score candidate ``name`` on a copy of the teacher. A pruned shape an
        earlier candidate already scored (``seen``: shape -> name) is not probed again. With
        ``last_minitron``, the shared measurements are released once its pruning is done (the
        Grams take layers x intermediate² float64)."""
        cfg, method_blocks = method_input(candidate_config(name), self.train, self.held)
        row: dict[str, Any] = {"name": name, "method": cfg.model_dump(exclude_defaults=True)}
        t0 = time.monotonic()
        student = copy.deepcopy(self.teacher)
        try:
            result = self._build(student, cfg, method_blocks)
        except ValueError as exc:  # unreachable target, unsupported architecture
            row.update(status="refused", reason=str(exc))
            return Candidate(row)
        finally:
            if last_minitron:
                self.measured_once.release()
        method_s = time.monotonic() - t0
        shape = model_shape(student)
        if shape != "low-rank" and shape in seen:
            row.update(status=f"same shape as {seen[shape]}", shape=shape)
            return Candidate(row)
        kd = distill_logits(student, self.train, self.probe, teacher=self.teacher,
                            reporter=self.reporter)  # fmt: skip
        score = fidelity(self.teacher, student, self.held, n_resamples=200, reporter=self.reporter)
        row.update(
            status="scored",
            params=count_parameters(student),
            shape=shape,
            kl=round(score.kl_per_token, 6),
            top1_agreement=round(score.top1_agreement, 6),
            perplexity_ratio=round(score.perplexity_ratio, 6),
            method_seconds=round(method_s, 3),
            measure_seconds=result.details.get("measure_seconds", 0.0),
            probe_seconds=round(kd.seconds, 3),
            probe_tokens=kd.tokens,  # whole batches: at least probe.tokens
            kd_tokens_per_second=round(kd.tokens / max(kd.seconds, 1e-6), 3),
            seconds=round(time.monotonic() - t0, 3),
        )
        return Candidate(row, student, result)

    def _build(self, student: nn.Module, cfg: MethodParameters, blocks: torch.Tensor) -> Any:
        common: dict[str, Any] = {"blocks": blocks, "target_params": self.target_params,
                                  "reporter": self.reporter}  # fmt: skip
        if isinstance(cfg, MinitronConfig):
            return MinitronMethod().prune(student, cfg, measurements=self.measured_once, **common)
        return compress(student, cfg, **common)
