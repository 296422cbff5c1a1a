"""Train one decoder block's low-rank factors to reproduce the teacher block's outputs.

Pure functions over tensors and modules: no model walking, no reporting policy. The caller
(``compression/methods/lillama/method.py``) owns the layer-by-layer streaming.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimforge.compression.lowrank import LowRankLinear

__all__ = ["BlockTrainResult", "feature_loss", "lowrank_parameters", "run_block", "train_block"]


def feature_loss(
    a: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Lillama's loss: per token mean_d |a - y| - log sigmoid(cos(a, y)), averaged over real tokens.

    ``a`` and ``y`` are [..., d] (student and teacher block outputs); ``mask`` is [...] with 1
    for real tokens and 0 for padding (None: every token counts). Computed in float32 (or
    float64 if the inputs already are).
    """
    dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    a, y = a.to(dtype), y.to(dtype)
    l1 = (a - y).abs().mean(dim=-1)
    cos = F.cosine_similarity(a, y, dim=-1, eps=1e-8)
    per_token = l1 - F.logsigmoid(cos)  # [...]
    if mask is None:
        return per_token.mean()
    m = mask.to(dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


def lowrank_parameters(block: nn.Module) -> list[torch.Tensor]:
    """The factor weights (A and B) of every LowRankLinear in ``block``; biases stay frozen."""
    params: list[torch.Tensor] = []
    for module in block.modules():
        if isinstance(module, LowRankLinear):
            params += [module.first.weight, module.second.weight]
    return params


def _output(out: Any) -> torch.Tensor:
    # Decoder layers of transformers 5 return a tensor; older ones a tuple (hidden, ...).
    return out[0] if isinstance(out, tuple | list) else out


def run_block(
    block: nn.Module, x: torch.Tensor, layer_args: Sequence[Any], layer_kwargs: dict[str, Any]
) -> torch.Tensor:
    """The block's hidden-state output for input ``x`` [b, t, d]."""
    return _output(block(x, *layer_args, **layer_kwargs))


@dataclass
class BlockTrainResult:
    """Joint loss on all inputs before and after training, and the optimiser steps taken."""

    loss_before: float
    loss_after: float
    steps: int
    seconds: float


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def _joint_loss(
    block: nn.Module,
    teacher_inputs: Sequence[torch.Tensor],
    student_inputs: Sequence[torch.Tensor] | None,
    targets: Sequence[torch.Tensor],
    contexts: Sequence[tuple[Sequence[Any], dict[str, Any]]],
    masks: Sequence[torch.Tensor | None],
    device: torch.device,
    dtype: torch.dtype,
) -> float:
    total = 0.0
    # Indexing, not iterating pairs: the sequences may be disk-backed (one batch in RAM at once).
    for i in range(len(targets)):
        args, kwargs = contexts[i]
        y = targets[i].to(device, torch.float32)
        mask = masks[i]
        mask_d = None if mask is None else mask.to(device)
        with _autocast(device):
            t_out = run_block(block, teacher_inputs[i].to(device, dtype), args, kwargs)
            t_loss = float(feature_loss(t_out, y, mask_d))
            if student_inputs is None:  # the same input (no compressed block below yet)
                s_loss = t_loss
            else:
                x_s = student_inputs[i]
                s_out = run_block(block, x_s.to(device, dtype), args, kwargs)
                s_loss = float(feature_loss(s_out, y, mask_d))
        total += t_loss + s_loss
    return total / max(1, len(targets))


@torch.enable_grad()
def train_block(
    student_block: nn.Module,
    teacher_inputs: Sequence[torch.Tensor],
    student_inputs: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    layer_kwargs: Sequence[tuple[Sequence[Any], dict[str, Any]]],
    *,
    masks: Sequence[torch.Tensor | None] | None = None,
    learning_rate: float = 8.6e-5,
    weight_decay: float = 0.01,
    epochs: int = 1,
    max_steps: int | None = None,
    seed: int = 0,
    check: Callable[[], None] | None = None,
    check_every: int = 16,
) -> BlockTrainResult:
    """Train ``student_block``'s low-rank factors on the joint Lillama loss.

    Batch i is (``teacher_inputs[i]``, ``student_inputs[i]``, ``targets[i]``), each [b, t, d],
    run with positional/keyword extras ``layer_kwargs[i]`` = (args, kwargs) (attention mask,
    position embeddings … as the model passed them). Loss = l(S(x_T), y) + l(S(x_S), y): inputs
    are detached, only the LowRankLinear factor weights train (one AdamW, everything else
    frozen). The block must hold float32 (master) weights; on CUDA the forward runs under bf16
    autocast. Batch order is shuffled each epoch (seeded). ``check`` (cancellation) is called
    every ``check_every`` steps. Returns the mean joint loss over all batches before and after.
    """
    n = len(targets)
    if not (len(teacher_inputs) == len(student_inputs) == len(layer_kwargs) == n) or n == 0:
        raise ValueError("teacher_inputs, student_inputs, targets and layer_kwargs must align")
    masks = list(masks) if masks is not None else [None] * n
    params = lowrank_parameters(student_block)
    if not params:
        raise ValueError("the block has no LowRankLinear factors to train")
    device, dtype = params[0].device, params[0].dtype
    trainable = {id(p) for p in params}
    frozen = [p for p in student_block.parameters() if id(p) not in trainable]
    saved_flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    for factor in params:
        factor.requires_grad_(True)
    # The same sequence object for both inputs (no compressed block below yet): one term, twice.
    students = None if student_inputs is teacher_inputs else student_inputs
    t0 = time.monotonic()
    was_training = student_block.training
    student_block.eval()  # no dropout: the teacher targets were computed in eval mode
    try:
        before = _joint_loss(
            student_block, teacher_inputs, students, targets, layer_kwargs, masks, device, dtype
        )
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
        generator = torch.Generator().manual_seed(seed)
        total_steps = epochs * n if max_steps is None else min(max_steps, epochs * n)
        steps = 0
        while steps < total_steps:
            for i in torch.randperm(n, generator=generator).tolist():
                if steps >= total_steps:
                    break
                if check is not None and steps % check_every == 0:
                    check()
                x_t, y = teacher_inputs[i], targets[i]
                args, kwargs = layer_kwargs[i]
                mask_i = masks[i]
                mask = None if mask_i is None else mask_i.to(device)
                y_d = y.to(device, torch.float32)
                with _autocast(device):
                    t_out = run_block(student_block, x_t.detach().to(device, dtype), args, kwargs)
                    loss = feature_loss(t_out, y_d, mask)
                    if students is None:  # same input: the two terms are equal
                        loss = 2 * loss
                    else:
                        s_in = students[i].detach().to(device, dtype)
                        s_out = run_block(student_block, s_in, args, kwargs)
                        loss = loss + feature_loss(s_out, y_d, mask)
                if not math.isfinite(float(loss.detach())):
                    raise FloatingPointError("the block loss is not finite")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
        for factor in params:
            factor.grad = None
        after = _joint_loss(
            student_block, teacher_inputs, students, targets, layer_kwargs, masks, device, dtype
        )
    finally:
        for p, flag in zip(frozen, saved_flags, strict=True):
            p.requires_grad_(flag)
        student_block.train(was_training)
    return BlockTrainResult(before, after, steps, time.monotonic() - t0)
