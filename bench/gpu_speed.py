"""Speed and memory of the worker's GPU paths on a Llama of a given shape (random weights): a
streamed ``lillama`` job and ``kd`` with the teacher on the fly. Part of ``gpu_check.py``.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention,
forward and backward, as PyTorch dispatches them), and each rate is set against the device's
measured bf16 matmul peak (``gpu_common.matmul_peak``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from gpu_common import Row, at_least, gib, peak_memory, reset_peak_memory, sync, weight_bytes
from gpu_report import OutOfTime
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaForCausalLM

import slimforge.compression.methods.lillama.method as lillama_method
from slimforge.compression import compress, count_parameters, resolve_target
from slimforge.compression.configs import KdConfig, LillamaConfig
from slimforge.compression.distill.kd import distill_logits

__all__ = ["KD_MEASURES", "LILLAMA_MEASURES", "kd_speed", "lillama_streamed"]

LILLAMA_MEASURES = (
    "end-to-end compression (streamed)",
    "block training tokens/s",
    "block training share of matmul peak",
    "peak GPU memory (streamed)",
    "one decoder layer, fp32 master weights",
    "one batch of hidden states",
    "model weights",
)
KD_MEASURES = ("kd tokens/s", "kd share of matmul peak", "kd FLOPs per step", "peak GPU memory")


@dataclass
class BlockCall:
    """One ``train_block`` call of a lillama job: wall seconds, optimiser steps, tokens per
    step, and its FLOPs when they were counted (that call is then not timed)."""

    seconds: float
    steps: int
    step_tokens: int
    flops: float | None


@contextmanager
def timed_block_training(device: torch.device) -> Iterator[list[BlockCall]]:
    """Record every ``train_block`` call lillama makes, synchronised around it.

    The second call's FLOPs are counted (under FlopCounterMode, which slows it: it is left out
    of the timing). From the second block on the student's input differs from the teacher's, so
    every later call runs the same two loss terms on the same shapes: those calls are timed.
    """
    original: Callable[..., Any] = lillama_method.train_block
    calls: list[BlockCall] = []

    def timed(block: nn.Module, teacher_inputs: Any, *args: Any, **kwargs: Any) -> Any:
        count = len(calls) == 1
        sync(device)
        t0 = time.perf_counter()
        if count:
            with FlopCounterMode(display=False) as counter:
                result = original(block, teacher_inputs, *args, **kwargs)
        else:
            result = original(block, teacher_inputs, *args, **kwargs)
        sync(device)
        first = teacher_inputs[0]
        calls.append(
            BlockCall(
                seconds=time.perf_counter() - t0,
                steps=result.steps,
                step_tokens=first.shape[0] * first.shape[1],
                flops=float(counter.get_total_flops()) if count else None,
            )
        )
        return result

    lillama_method.train_block = timed  # type: ignore[assignment]  # a looser signature
    try:
        yield calls
    finally:
        lillama_method.train_block = original


def lillama_streamed(
    model: LlamaForCausalLM,
    blocks: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int,
    ratio: float,
    peak: float,
) -> list[Row]:
    """Compress a copy of ``model`` (in CPU memory, where the copy stays) with lillama streamed
    to ``device``, as the worker runs it: one decoder layer at a time on the device.
    ``blocks`` [n, t] are the calibration tokens, ``peak`` the device's matmul FLOP/s.

    Block training tokens/s and its share of ``peak`` cover whole ``train_block`` calls (the
    steps plus the loss passes before and after), from the third trained block on; the FLOPs of
    one such call are counted on the second. When the time guard interrupts the job after three
    or more trained blocks, those blocks are reported (the total then covers only them).
    Raises RuntimeError with fewer than 3 trained blocks (nothing to time).
    """
    student = copy.deepcopy(model)
    config = LillamaConfig(batch_size=batch_size)
    target = resolve_target(count_parameters(student), ratio=ratio)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    note = f"{blocks.numel():,} calibration tokens"
    with timed_block_training(device) as calls:
        try:
            compress(student, config, blocks=blocks, target_params=target, device=device)
        except OutOfTime:  # the guard: every measure but the total holds per block
            if len(calls) < 3:
                raise
            note += f"; cut by the time guard after {len(calls)} trained blocks"
    sync(device)
    seconds = time.perf_counter() - t0
    if len(calls) < 3:
        raise RuntimeError(f"lillama trained {len(calls)} blocks: 3 or more are needed to time")
    return _lillama_rows(
        model, blocks[:batch_size], calls, seconds, note, peak_memory(device), peak, device
    )


def _lillama_rows(
    model: LlamaForCausalLM,
    batch: torch.Tensor,
    calls: list[BlockCall],
    seconds: float,
    note: str,
    peak_bytes: float | None,
    peak: float,
    device: torch.device,
) -> list[Row]:
    timed = calls[2:]
    assert calls[1].flops is not None  # counted on the second call
    train_seconds = sum(c.seconds for c in timed)
    tokens = sum(c.steps * c.step_tokens for c in timed)
    share = 100 * calls[1].flops * len(timed) / train_seconds / peak
    layer = model.model.layers[0]
    hidden_bytes = batch.numel() * model.config.hidden_size * next(model.parameters()).itemsize
    part = "lillama, streamed"
    return [
        Row(part, LILLAMA_MEASURES[0], seconds, "s", note),
        Row(part, LILLAMA_MEASURES[1], tokens / train_seconds, "tokens/s",
            f"{len(timed)} block(s), {sum(c.steps for c in timed)} steps"),
        Row(part, LILLAMA_MEASURES[2], share, "%", f"{calls[1].flops / 1e12:.3f} TFLOP per block",
            "goal ≥ 40 %", at_least(share, 40.0) if device.type == "cuda" else ""),
        Row(part, LILLAMA_MEASURES[3], None if peak_bytes is None else gib(peak_bytes), "GiB",
            "n/a (CPU)" if peak_bytes is None else "",
            "goal: one layer + one batch's activations, not the model"),
        Row(part, LILLAMA_MEASURES[4], gib(weight_bytes(layer, torch.float32)), "GiB"),
        Row(part, LILLAMA_MEASURES[5], gib(hidden_bytes), "GiB", f"{tuple(batch.shape)} tokens"),
        Row(part, LILLAMA_MEASURES[6], gib(weight_bytes(model)), "GiB",
            f"{count_parameters(model):,} parameters"),
    ]  # fmt: skip


def kd_speed(
    teacher: nn.Module,
    student: nn.Module,
    blocks: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int,
    steps: int,
    peak: float,
) -> list[Row]:
    """``distill_logits`` of ``student`` from ``teacher`` (on the fly), both already on
    ``device``, with gradient checkpointing as the worker uses on a GPU: one step counted under
    FlopCounterMode (it also warms the device up), then ``steps`` timed steps. ``blocks`` [n, t];
    ``peak`` is the device's matmul FLOP/s. The counted FLOPs include the checkpointing's
    recomputed forward, which the device does run."""
    step_tokens = batch_size * blocks.shape[1]

    def config(n_steps: int) -> KdConfig:
        return KdConfig(
            tokens=n_steps * step_tokens, batch_size=batch_size, gradient_checkpointing=True
        )

    with FlopCounterMode(display=False) as counter:
        distill_logits(student, blocks, config(1), teacher=teacher)
    step_flops = float(counter.get_total_flops())
    reset_peak_memory(device)
    sync(device)
    result = distill_logits(student, blocks, config(steps), teacher=teacher)
    sync(device)
    peak_bytes = peak_memory(device)
    share = 100 * step_flops * result.steps / result.seconds / peak
    models = weight_bytes(teacher) + weight_bytes(student)
    part = "kd, teacher on the fly"
    return [
        Row(part, KD_MEASURES[0], result.tokens / result.seconds, "tokens/s",
            f"{result.steps} steps of {step_tokens:,} tokens"),
        Row(part, KD_MEASURES[1], share, "%", check="goal ≥ 40 %",
            verdict=at_least(share, 40.0) if device.type == "cuda" else ""),
        Row(part, KD_MEASURES[2], step_flops / 1e12, "TFLOP",
            "student fwd + recompute + bwd, teacher fwd"),
        Row(part, KD_MEASURES[3], None if peak_bytes is None else gib(peak_bytes), "GiB",
            ("n/a (CPU); " if peak_bytes is None else "")
            + f"teacher + student weights {gib(models):.2f} GiB"),
    ]  # fmt: skip
