"""The optional ``distilling`` stage of a job: logit KD from the original model (``kd``).

Split in two around the method: :func:`prepare_distillation` runs before compression, while the
model is still the teacher (it keeps a frozen copy, or caches the top-k logits and keeps no
copy); :func:`run_distillation` trains the compressed student afterwards.
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

__all__ = ["DistillPlan", "prepare_distillation", "run_distillation"]


@dataclass
class DistillPlan:
    """What the stage needs after compression: its config, tokens and teacher signal."""

    config: KdConfig
    blocks: torch.Tensor
    teacher: nn.Module | None
    cache: TopK | None


def prepare_distillation(
    model: nn.Module, *, config: KdConfig, blocks: torch.Tensor
) -> DistillPlan:
    """Capture the teacher for distilling on ``blocks``: a frozen copy of ``model`` (on the
    fly) or its top-k logits (``config.top_k``)."""
    if config.top_k is not None:
        return DistillPlan(config, blocks, None, teacher_topk(model, blocks, k=config.top_k))
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    return DistillPlan(config, blocks, teacher, None)


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

    The student trains in float32 (master weights; bf16 autocast on GPU) and goes back to its
    dtype afterwards. ``checkpoint``: where it saves its state to resume from after a kill.
    With evaluation blocks, the perplexity before distillation is recorded too,
    so the job shows what the stage bought.
    """
    metrics: dict[str, Any] = {}
    if eval_blocks is not None:
        metrics["perplexity_before_distill"] = perplexity(model, eval_blocks, reporter=reporter)
        reporter.event(
            "perplexity before distillation",
            data={"perplexity": metrics["perplexity_before_distill"]},
        )
    dtype = next(model.parameters()).dtype
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
