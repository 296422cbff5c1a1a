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
from slimforge.compression.distill.kd import TopK, distill_logits, teacher_topk
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
    shows what the stage bought. Raises ValueError when the hidden-state loss cannot pair the
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
    if plan.teacher is not None:
        plan.teacher.to(first.device)
    model.float()
    try:
        result = distill_logits(
            model,
            plan.blocks,
            plan.config,
            teacher=plan.teacher,
            teacher_cache=plan.cache,
            layer_map=layer_map,
            reporter=reporter,
            checkpoint=checkpoint,
        )
    finally:
        model.to(dtype)
        plan.teacher = None  # free the teacher copy as soon as possible
    metrics["distill"] = {
        "steps": result.steps,
        "tokens": result.tokens,
        "distinct_tokens": int(plan.blocks.numel()),
        "seconds": round(result.seconds, 3),
        "loss_first": result.loss_first,
        "loss_last": result.loss_last,
        "curve": result.curve,
    }
    return metrics
