"""The optional ``distilling`` stage's two halves: logit KD from the original model (``kd``).

:func:`prepare_distillation` runs before compression, while the model is still the teacher: it
keeps a frozen copy (parked in CPU memory, where the student's compute is not) or caches the
top-k logits and keeps no copy. :func:`run_distillation` trains the compressed student
afterwards, with the teacher brought to the student's device for the stage only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimforge.compression import Reporter, perplexity
from slimforge.compression.configs import KdConfig
from slimforge.compression.distill.guard import GuardResult, guard_kl, split_guard
from slimforge.compression.distill.kd import (
    TopK,
    distill_logits,
    teacher_topk,
    trainable_parameters,
)
from slimforge.compression.distill.kd_resume import KdCheckpoint

__all__ = [
    "TEACHER_HOME",
    "DistillPlan",
    "frozen_copy",
    "prepare_distillation",
    "run_distillation",
]

# Where the teacher copy waits while the method runs. Not the accelerator: a streaming method
# (lillama) promises that the GPU holds one layer, and any method's peak-memory figure would
# count a second model on the GPU otherwise (issue 15, case 11).
TEACHER_HOME = "cpu"


@dataclass
class DistillPlan:
    """What the stage needs after compression: its config, tokens and teacher signal."""

    config: KdConfig
    blocks: torch.Tensor
    teacher: nn.Module | None
    cache: TopK | None


def prepare_distillation(
    model: nn.Module,
    *,
    config: KdConfig,
    blocks: torch.Tensor,
    home: str = TEACHER_HOME,
    teacher: nn.Module | None = None,
) -> DistillPlan:
    """Capture the teacher for distilling on ``blocks`` [n, seq_len]: a frozen copy of
    ``model`` kept on ``home`` (on the fly; ``teacher`` when one was already made, so the job
    holds one copy), or its top-k logits (``config.top_k``; computed where the model is, kept
    on the CPU)."""
    if config.top_k is not None:
        return DistillPlan(config, blocks, None, teacher_topk(model, blocks, k=config.top_k))
    return DistillPlan(config, blocks, teacher or frozen_copy(model, home), None)


def frozen_copy(model: nn.Module, device: str = TEACHER_HOME) -> nn.Module:
    """A frozen copy of ``model`` whose tensors are made on ``device`` one by one: the model
    stays where it is, and its device never holds a second copy (not even for a moment)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():  # tied parameters are one object: copied once, still tied
        memo[id(p)] = nn.Parameter(p.detach().to(device, copy=True), requires_grad=False)
    for b in model.buffers():
        memo[id(b)] = b.detach().to(device, copy=True)
    teacher = copy.deepcopy(model, memo)
    return teacher.eval().requires_grad_(False)


def run_distillation(
    model: nn.Module,
    plan: DistillPlan,
    *,
    reporter: Reporter,
    eval_blocks: torch.Tensor | None,
    layer_map: list[int] | None = None,
    checkpoint: KdCheckpoint | None = None,
) -> dict[str, Any]:
    """Distil into ``model`` in place; returns the metrics to add to the job's.

    The teacher joins the student on its device for the stage and is dropped after it. The
    student trains in float32 (master weights; bf16 autocast on GPU) and goes back to its
    dtype afterwards. ``layer_map``: the teacher layer of each student layer (the layers a
    depth cut kept). ``checkpoint``: where it saves its state to resume from after a kill.
    With evaluation blocks, the perplexity before distillation is recorded too, so the job
    shows what the stage bought. With ``config.guard`` (and the teacher on the fly), the last
    sixteenth of the kd blocks is held back and the student from before kd is kept when kd
    raised its KL to the teacher there (:mod:`slimforge.compression.distill.guard`; metrics
    ``distill.guard``). Raises ValueError when the hidden-state loss cannot pair the
    models (see :func:`slimforge.compression.distill.kd.distill_logits`).
    """
    metrics: dict[str, Any] = {}
    if eval_blocks is not None:
        metrics["perplexity_before_distill"] = perplexity(model, eval_blocks, reporter=reporter)
        reporter.event(
            "perplexity before distillation",
            data={"perplexity": metrics["perplexity_before_distill"]},
        )
    first = next(model.parameters())
    dtype = first.dtype
    teacher = plan.teacher
    if teacher is not None:
        teacher.to(first.device)
    train, held = plan.blocks, None
    if teacher is not None and plan.config.guard:
        train, held = split_guard(plan.blocks)
    before = None  # the student as kd receives it, when the guard is on
    if teacher is not None and held is not None:
        before = _Before(
            weights=_snapshot(model, plan.config.train_embeddings),
            kl=guard_kl(teacher, model, held),
            teacher=teacher,
            held=held,
        )
    model.float()
    try:
        result = distill_logits(
            model,
            train,
            plan.config,
            teacher=teacher,
            teacher_cache=plan.cache,
            layer_map=layer_map,
            reporter=reporter,
            checkpoint=checkpoint,
        )
    except FloatingPointError as exc:  # diverged: the guard's case, when it is on
        model.to(dtype)
        if before is None:
            raise
        metrics["distill"] = _diverged(model, before, train, exc, reporter)
        return metrics
    finally:
        plan.teacher = None  # the plan lets go of the teacher copy; the guard's is local
    model.to(dtype)
    guard = None if before is None else _keep_better(model, before, reporter)
    metrics["distill"] = {
        "steps": result.steps,
        "tokens": result.tokens,
        "distinct_tokens": int(train.numel()),
        "seconds": round(result.seconds, 3),
        "loss_first": result.loss_first,
        "loss_last": result.loss_last,
        "curve": result.curve,
        "guard": None if guard is None else vars(guard),
    }
    return metrics


@dataclass
class _Before:
    """The guard's record of the student before kd: its trained weights (CPU copies), its
    KL(teacher ‖ student) in nats per token on the held-back blocks, the teacher and blocks."""

    weights: dict[str, torch.Tensor]
    kl: float
    teacher: nn.Module
    held: torch.Tensor


def _snapshot(model: nn.Module, train_embeddings: bool) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters kd trains (by name), to put back if kd makes it worse:
    the rest (the embeddings, unless trained) does not change."""
    trained = {id(p) for p in trainable_parameters(model, train_embeddings)}
    return {
        name: p.detach().to("cpu", copy=True)
        for name, p in model.named_parameters()
        if id(p) in trained
    }


def _restore(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    unknown = model.load_state_dict(weights, strict=False).unexpected_keys
    if unknown:  # the snapshot came from this model: a bug, not a user error
        raise RuntimeError(f"kd guard: snapshot names unknown to the model: {unknown}")


def _keep_better(model: nn.Module, before: _Before, reporter: Reporter) -> GuardResult:
    """Measure the distilled student on the held-back blocks; put the weights from before kd
    back when its KL to the teacher went up (warning event), and report both KLs."""
    kl_after = guard_kl(before.teacher, model, before.held)
    kept = "distilled" if kl_after <= before.kl else "before"
    tokens = int(before.held.numel())
    data = {"kl_before": round(before.kl, 6), "kl_after": round(kl_after, 6),
            "tokens": tokens, "kept": kept}  # fmt: skip
    if kept == "before":
        _restore(model, before.weights)
        reporter.event(
            f"kd made the student worse on held-back kd text (KL {before.kl:.4f} -> "
            f"{kl_after:.4f} nats/token): the student from before kd is kept; try a lower "
            "distill.learning_rate",
            level="warning",
            data=data,
        )
    else:
        reporter.event("kd checked on held-back kd text", data=data)
    return GuardResult(kl_before=before.kl, kl_after=kl_after, tokens=tokens, kept=kept)


def _diverged(
    model: nn.Module,
    before: _Before,
    train: torch.Tensor,
    exc: FloatingPointError,
    reporter: Reporter,
) -> dict[str, Any]:
    """kd's loss stopped being finite: put the weights from before kd back (warning event)
    and return the stage's metrics, which say so (no steps count as done; no KL after)."""
    _restore(model, before.weights)
    tokens = int(before.held.numel())
    reporter.event(
        f"kd diverged ({exc}): the student from before kd is kept; try a lower "
        "distill.learning_rate",
        level="warning",
        data={"kl_before": round(before.kl, 6), "tokens": tokens},
    )
    return {
        "steps": 0,
        "tokens": 0,
        "distinct_tokens": int(train.numel()),
        "diverged": str(exc),
        "guard": {"kl_before": before.kl, "kl_after": None, "tokens": tokens, "kept": "before"},
    }
