"""Logit knowledge distillation (the ``kd`` stage): train a whole student on a teacher's outputs.

Minitron's recipe: forward KL from the teacher's next-token distribution to the student's,
temperature 1, optionally mixed with cross-entropy on the data and a cosine loss on matched
hidden states (helps when depth is cut hard). The teacher runs alongside the student (exact), or
its top-k logits are computed once beforehand (:func:`teacher_topk`) so the teacher need not stay
in memory. Pure maths and a training loop; the caller decides which model is the teacher.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimforge.compression.configs import KdConfig
from slimforge.compression.distill.checkpoints import tokens_fingerprint
from slimforge.compression.distill.kd_resume import KdCheckpoint
from slimforge.compression.progress import NullReporter, Reporter

__all__ = [
    "KdResult",
    "TopK",
    "distill_logits",
    "hidden_cosine_loss",
    "kd_loss",
    "teacher_topk",
    "topk_kd_loss",
    "trainable_parameters",
]


def _masked_mean(per_token: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return per_token.mean()
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forward KL(p_teacher ‖ p_student) per token at ``temperature``, times T² (so gradients keep
    their scale across temperatures), averaged over real tokens. Logits [..., vocab], mask [...]."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = (t.exp() * (t - s)).sum(dim=-1)  # [...]
    return _masked_mean(per_token, mask) * temperature**2


@dataclass
class TopK:
    """A teacher's k largest logits per position: ``values`` [n, t, k] and ``indices`` [n, t, k]."""

    values: torch.Tensor
    indices: torch.Tensor


def topk_kd_loss(
    student_logits: torch.Tensor,
    top_values: torch.Tensor,
    top_indices: torch.Tensor,
    *,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL from the teacher's distribution renormalised over its top-k tokens to the student's:
    sum_k q_k (log q_k - log p_student[idx_k]), times T². Zero only when the student puts all its
    mass on those k tokens in the teacher's proportions; equals :func:`kd_loss` when k = vocab."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    s_top = s.gather(-1, top_indices.long())  # [..., k]
    q = F.log_softmax(top_values.float() / temperature, dim=-1)
    per_token = (q.exp() * (q - s_top)).sum(dim=-1)
    return _masked_mean(per_token, mask) * temperature**2


def hidden_cosine_loss(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the given pairs of (1 - cos) between hidden states [b, t, d], per real token."""
    if len(student_hidden) != len(teacher_hidden) or not student_hidden:
        raise ValueError("student and teacher hidden states must pair up (and not be empty)")
    losses = [
        _masked_mean(1.0 - F.cosine_similarity(s.float(), t.float(), dim=-1, eps=1e-8), mask)
        for s, t in zip(student_hidden, teacher_hidden, strict=True)
    ]
    return torch.stack(losses).mean()


@torch.no_grad()
def teacher_topk(teacher: nn.Module, blocks: torch.Tensor, *, k: int, batch_size: int = 4) -> TopK:
    """The teacher's top-``k`` logits for every position of ``blocks`` [n, t], kept on CPU
    (values in bfloat16, indices int32: 6 bytes per kept logit)."""
    device = next(teacher.parameters()).device
    values, indices = [], []
    was_training = teacher.training
    teacher.eval()
    try:
        for i in range(0, blocks.shape[0], batch_size):
            logits = teacher(
                input_ids=blocks[i : i + batch_size].to(device), use_cache=False
            ).logits
            top = logits.float().topk(k, dim=-1)
            values.append(top.values.to("cpu", torch.bfloat16))
            indices.append(top.indices.to("cpu", torch.int32))
    finally:
        teacher.train(was_training)
    return TopK(torch.cat(values), torch.cat(indices))


@dataclass
class KdResult:
    """What the distillation did: optimiser steps, tokens seen, the loss curve (mean loss per
    reporting window) and the time it took."""

    steps: int
    tokens: int
    seconds: float
    loss_first: float
    loss_last: float
    curve: list[dict[str, float]] = field(default_factory=list)


def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak`` then cosine decay to a tenth of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def trainable_parameters(student: nn.Module, train_embeddings: bool) -> list[torch.Tensor]:
    """The parameters kd trains: every one except (unless ``train_embeddings``) the input
    embeddings and a tied output head."""
    frozen: set[int] = set()
    if not train_embeddings:
        get_in = getattr(student, "get_input_embeddings", None)
        emb = get_in() if callable(get_in) else None
        if emb is not None:
            frozen |= {id(p) for p in emb.parameters()}
    return [p for p in student.parameters() if id(p) not in frozen]


def _layer_map(n_student: int, n_teacher: int, given: Sequence[int] | None) -> list[int]:
    """Teacher layer index for each student layer: ``given`` (e.g. the layers depth pruning
    kept) or an even spread that always pairs the last layers."""
    if given is not None:
        if len(given) != n_student or not all(0 <= i < n_teacher for i in given):
            raise ValueError(f"layer map {list(given)} does not fit {n_student} -> {n_teacher}")
        return list(given)
    return [round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)]


def _hidden_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "hidden_size", None)
    return size if isinstance(size, int) else None


def _check_hidden_pairs(student: nn.Module, teacher: nn.Module, weight: float) -> None:
    """The hidden-state loss compares each student layer's output with its teacher layer's
    channel by channel: it needs the same hidden size (a learned projection, as Minitron's
    paper uses across widths, is not implemented)."""
    s, t = _hidden_size(student), _hidden_size(teacher)
    if s is not None and t is not None and s != t:
        raise ValueError(
            f"the kd hidden-state loss (distill.hidden_weight = {weight:g}) compares layer "
            f"outputs of equal width, but the student's hidden size is {s} and the teacher's "
            f"{t} (the method cut the hidden size): set distill.hidden_weight to 0, or keep "
            "the hidden size (minitron: leave 'hidden' out of axes)"
        )


def _manifest(
    config: KdConfig, blocks: torch.Tensor, params: list[torch.Tensor], steps: int, batch: int
) -> dict[str, Any]:
    """What identifies a run, for its saved state: a state of another run is not resumed."""
    return {
        "config": config.model_dump(mode="json"),
        "tokens": tokens_fingerprint(blocks),
        "shapes": [list(p.shape) for p in params],
        "steps": steps,
        "batch": batch,
    }


def distill_logits(
    student: nn.Module,
    blocks: torch.Tensor,
    config: KdConfig,
    *,
    teacher: nn.Module | None = None,
    teacher_cache: TopK | None = None,
    layer_map: Sequence[int] | None = None,
    reporter: Reporter | None = None,
    checkpoint: KdCheckpoint | None = None,
) -> KdResult:
    """Train ``student`` in place to match the teacher on ``blocks`` [n, t] for ``config.tokens``.

    Give either ``teacher`` (run on the fly, exact KL) or ``teacher_cache`` (top-k logits of the
    same ``blocks``). Batches cycle through the blocks in a seeded order, one AdamW over every
    parameter except the embeddings (``config.train_embeddings``), gradient clipping at 1, warm-up
    then cosine decay, bf16 autocast on CUDA. ``layer_map`` pairs student layers with teacher
    layers for the hidden-state loss (default: an even spread); a student whose hidden size
    differs from the teacher's is refused for that loss (ValueError, before any step). About
    20 progress events carry the loss curve.

    With a ``checkpoint``, the training state is saved as it goes, and a run that finds a state
    saved by the same run (a killed job, restarted) goes on from it: the result is the same,
    step for step, as an uninterrupted run's.
    """
    if (teacher is None) == (teacher_cache is None):
        raise ValueError("give exactly one of teacher (on the fly) or teacher_cache (top-k)")
    if config.hidden_weight > 0 and teacher is None:
        raise ValueError("the hidden-state loss needs the teacher on the fly (top_k unset)")
    if teacher_cache is not None and teacher_cache.indices.shape[:2] != blocks.shape:
        raise ValueError("teacher_cache does not cover these blocks")
    if teacher is not None and config.hidden_weight > 0:
        _check_hidden_pairs(student, teacher, config.hidden_weight)
    reporter = reporter or NullReporter()
    n, seq_len = blocks.shape
    batch = min(config.batch_size, n)
    steps = max(1, math.ceil(config.tokens / (batch * seq_len)))
    warmup = max(1, round(steps * config.warmup_fraction))
    device = next(student.parameters()).device
    params = trainable_parameters(student, config.train_embeddings)
    saved = [(p, p.requires_grad) for p in student.parameters()]
    kept = {id(p) for p in params}
    for p in student.parameters():
        p.requires_grad_(id(p) in kept)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = device.type == "cuda"
    toggle_on = getattr(student, "gradient_checkpointing_enable", None)
    toggle_off = getattr(student, "gradient_checkpointing_disable", None)
    checkpointing = checkpointing and callable(toggle_on) and callable(toggle_off)
    if checkpointing:
        toggle_on()  # type: ignore[misc]
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    window: list[float] = []
    losses: list[float] = []  # every step's loss, for the first and last
    curve: list[dict[str, float]] = []
    every = max(1, math.ceil(steps / 20))  # at most about 20 events
    t0 = time.monotonic()
    start = 0
    manifest = _manifest(config, blocks, params, steps, batch) if checkpoint else {}
    if checkpoint is not None and (state := checkpoint.load(manifest)) is not None:
        with torch.no_grad():
            for param, value in zip(params, state["params"], strict=True):
                param.copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start, order, window = state["step"], list(state["order"]), list(state["window"])
        losses, curve = list(state["losses"]), list(state["curve"])
        t0 -= state["seconds"]
        reporter.event(
            "distillation resumed from its last saved state",
            data={"step": start, "steps": steps},
        )
    was_training = student.training
    student.train()
    if teacher is not None:
        teacher.eval()
    want_hidden = config.hidden_weight > 0
    try:
        for step in range(start, steps):
            reporter.check_cancelled()
            if len(order) < batch:  # a new seeded pass over the blocks
                order += torch.randperm(n, generator=generator).tolist()
            idx, order = order[:batch], order[batch:]
            ids = blocks[idx].to(device)  # [b, t]
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, config.learning_rate, warmup)
            with _autocast(device):
                out = student(input_ids=ids, use_cache=False, output_hidden_states=want_hidden)
                logits = out.logits  # [b, t, vocab]
                if teacher is not None:
                    with torch.no_grad():
                        t_out = teacher(
                            input_ids=ids, use_cache=False, output_hidden_states=want_hidden
                        )
                    loss = kd_loss(logits, t_out.logits, temperature=config.temperature)
                else:
                    assert teacher_cache is not None
                    loss = topk_kd_loss(
                        logits,
                        teacher_cache.values[idx].to(device),
                        teacher_cache.indices[idx].to(device),
                        temperature=config.temperature,
                    )
                if config.ce_weight > 0:
                    ce = F.cross_entropy(
                        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                        ids[:, 1:].reshape(-1),
                    )
                    loss = (1 - config.ce_weight) * loss + config.ce_weight * ce
                if want_hidden:
                    # hidden_states[0] is the embedding output; [i + 1] is layer i's output.
                    s_h = out.hidden_states[1:]
                    t_h = t_out.hidden_states[1:]
                    pairs = _layer_map(len(s_h), len(t_h), layer_map)
                    loss = loss + config.hidden_weight * hidden_cosine_loss(
                        s_h, [t_h[j] for j in pairs]
                    )
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"the distillation loss is not finite at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            window.append(value)
            losses.append(value)
            if (step + 1) % every == 0 or step + 1 == steps:
                point = {
                    "step": step + 1,
                    "steps": steps,
                    "tokens": (step + 1) * batch * seq_len,
                    "loss": sum(window) / len(window),
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": round(time.monotonic() - t0, 2),
                }
                curve.append(point)
                window = []
                reporter.event("distillation step", data=point)
            if checkpoint is not None and step + 1 < steps and checkpoint.due():
                checkpoint.save(
                    manifest,
                    {
                        "step": step + 1,
                        "params": [p.detach().cpu() for p in params],
                        "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(),
                        "order": order,
                        "window": window,
                        "losses": losses,
                        "curve": curve,
                        "seconds": time.monotonic() - t0,
                    },
                )
    finally:
        optimizer.zero_grad(set_to_none=True)
        for p, flag in saved:
            p.requires_grad_(flag)
        if checkpointing:
            toggle_off()  # type: ignore[misc]
        student.train(was_training)
    return KdResult(
        steps=steps,
        tokens=steps * batch * seq_len,
        seconds=time.monotonic() - t0,
        loss_first=losses[0],
        loss_last=losses[-1],
        curve=curve,
    )
