"""Shared pieces of the GPU bench scripts (``gpu_check.py``, ``lillama_gpu.py``): the model
shapes, the measured matmul peak, device memory and timing helpers, and the rows of a report.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

# TinyLlama-1.1B's shape: 22 layers, hidden 2048, MLP 5632, 32 heads / 4 KV heads.
SHAPE_1B: dict[str, Any] = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
}
SHAPE_TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
}


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA runs asynchronously), so timers are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compute_dtype(device: torch.device) -> torch.dtype:
    """The precision the worker computes in on ``device``: bfloat16 on a GPU, float32 on a CPU
    (the rule of ``slimforge.worker.stages.load.compute_dtype``, restated here because the
    worker package imports the service's dependencies, which a bare GPU machine lacks)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """Measured FLOP/s of an n x n x n matmul in ``dtype`` (2·n³ FLOPs; best of 10 timed runs
    after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def random_llama(
    shape: dict[str, Any], *, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> LlamaForCausalLM:
    """A Llama of ``shape`` with random weights in ``dtype`` on ``device``, in eval mode. The
    weights are initialised on ``device`` itself: a GPU draws a 1B model's in a second, where a
    CPU takes tens of seconds."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**shape))
    # cast: transformers' decorated ``to`` is typed to take a model, not a dtype.
    moved: LlamaForCausalLM = cast(Any, model).to(dtype)
    return moved.eval()


def weight_bytes(module: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of ``module``'s parameters, in their own dtype or as if stored in ``dtype``."""
    return sum(
        p.numel() * (p.element_size() if dtype is None else dtype.itemsize)
        for p in module.parameters()
    )


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak of allocated device memory (CUDA only; a no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> float | None:
    """Peak bytes of tensors allocated on ``device`` since :func:`reset_peak_memory`
    (``torch.cuda.max_memory_allocated``); None on a CPU, which has no such counter."""
    if device.type != "cuda":
        return None
    return float(torch.cuda.max_memory_allocated(device))


@dataclass
class Row:
    """One line of a report: ``value`` in ``unit`` (None: not a number, see ``text``),
    ``check`` the goal or tolerance it is held to and ``verdict`` PASS / FAIL when it has one."""

    part: str
    measure: str
    value: float | None = None
    unit: str = ""
    text: str = ""
    check: str = ""
    verdict: str = ""

    def cell(self) -> str:
        """The value as a table cell: the number (4 significant digits) with its unit, then
        ``text``."""
        parts = []
        if self.value is not None:
            number = f"{self.value:,.4g}" if math.isfinite(self.value) else str(self.value)
            parts.append(f"{number} {self.unit}".strip())
        if self.text:
            parts.append(self.text)
        return "; ".join(parts) if parts else "-"


def gib(n_bytes: float) -> float:
    """Bytes as GiB (2^30 bytes)."""
    return n_bytes / 2**30


def at_least(value: float, goal: float) -> str:
    """PASS when ``value`` reaches ``goal``, else FAIL."""
    return "PASS" if value >= goal else "FAIL"
