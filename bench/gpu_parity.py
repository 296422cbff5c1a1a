"""The worker's device path against its CPU path: the same method, target and calibration
tokens, once on a CPU in float32 and once on the device in its compute dtype (bf16 on a GPU),
each student scored against the teacher on the same held-out windows. Part of ``gpu_check.py``.

Tolerance (a device student PASSES when both hold):

- perplexity ratio within ``RATIO_TOLERANCE`` (5 %) of the CPU student's, relative;
- KL(teacher ‖ student) within ``KL_TOLERANCE`` (10 %) of the CPU student's plus twice the
  *rounding floor*: the KL of the teacher itself with its weights rounded to the device dtype.

Why not bit-equal: bf16 keeps 8 significant bits (relative rounding up to 2⁻⁹ per weight and
per activation), so the device path takes different near-tie decisions (which MLP neurons
minitron keeps, the trajectory of lillama's training under bf16 autocast) and lands on another,
equally good student. A broken device path (a layer left untrained, factors misplaced, a wrong
mask or dtype) moves the KL by far more than 10 %: the methods' own spread across settings in
docs/BENCHMARKS.md is tens of percent. Both students are scored in float32 on the same device
by the same float32 teacher, so the differences come from compression alone.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from gpu_common import Row, sync
from torch import nn

from slimforge.compression import compress, count_parameters, resolve_target
from slimforge.compression.configs import LillamaConfig, MinitronConfig, SvdConfig
from slimforge.compression.evaluation import fidelity
from slimforge.compression.parameters import MethodParameters

__all__ = ["KL_TOLERANCE", "METHODS", "RATIO_TOLERANCE", "Parity", "parity_measures"]

METHODS = ("svd", "minitron", "lillama")
RATIO_TOLERANCE = 0.05
KL_TOLERANCE = 0.10
FLOOR = "rounding floor"
_SIDES = ("CPU path", "device path")


def parity_measures(part: str) -> tuple[str, ...]:
    """The measures (row names) a part of this module reports: ``FLOOR`` or a method name."""
    if part == FLOOR:
        return ("KL of the teacher with rounded weights",)
    return tuple(f"{m}, {side}" for m in ("perplexity ratio", "KL", "seconds") for side in _SIDES)


def method_config(name: str, lillama_batch: int, mlp_multiple: int) -> MethodParameters:
    """The configuration each method is compared with: defaults, minitron on the MLP axis
    alone (one candidate shape, no search) in steps of ``mlp_multiple`` neurons, lillama with
    ``lillama_batch`` sequences a step."""
    if name == "svd":
        return SvdConfig()
    if name == "minitron":
        return MinitronConfig(axes=["mlp"], mlp_multiple=mlp_multiple)
    if name == "lillama":
        return LillamaConfig(batch_size=lillama_batch)
    raise ValueError(f"no parity configuration for method {name!r}")


class Parity:
    """One teacher (float32, CPU), its calibration blocks [n, t] and held-out evaluation blocks
    [m, t]; compresses and scores copies of the teacher. ``device`` and ``dtype`` are the
    device path's; scoring runs on ``device`` with a float32 copy of the teacher."""

    def __init__(
        self,
        teacher: nn.Module,
        calibration: torch.Tensor,
        evaluation: torch.Tensor,
        *,
        device: torch.device,
        dtype: torch.dtype,
        ratio: float,
        lillama_batch: int,
        mlp_multiple: int = 32,
    ) -> None:
        self.teacher = teacher.float().eval()
        self.calibration = calibration
        self.evaluation = evaluation
        self.device = device
        self.dtype = dtype
        self.ratio = ratio
        self.lillama_batch = lillama_batch
        self.mlp_multiple = mlp_multiple
        self.judge = self.teacher if device.type == "cpu" else copy.deepcopy(teacher).to(device)
        self.floor: float | None = None

    def _score(self, student: nn.Module) -> Any:
        return fidelity(
            self.judge,
            student.to(self.device, torch.float32),
            self.evaluation,
            batch_size=4,
            n_resamples=200,
        )

    def rounding_floor(self) -> list[Row]:
        """KL(teacher ‖ teacher with weights rounded to the device dtype), nats per token."""
        self.floor = float(self._score(copy.deepcopy(self.teacher).to(self.dtype)).kl_per_token)
        name = str(self.dtype).removeprefix("torch.")
        return [
            Row(FLOOR, parity_measures(FLOOR)[0], self.floor, "nats/token", f"weights in {name}")
        ]

    def _run(self, name: str, device: torch.device | None, dtype: torch.dtype) -> tuple[Any, float]:
        student = copy.deepcopy(self.teacher).to(dtype)
        target = resolve_target(count_parameters(student), ratio=self.ratio)
        config = method_config(name, self.lillama_batch, self.mlp_multiple)
        t0 = time.perf_counter()
        compress(student, config, blocks=self.calibration, target_params=target, device=device)
        sync(self.device)
        seconds = time.perf_counter() - t0
        return self._score(student), seconds

    def method(self, name: str) -> list[Row]:
        """Compress with ``name`` on the CPU (float32) and on the device path, score both."""
        if self.floor is None:
            self.rounding_floor()
        assert self.floor is not None
        cpu, cpu_s = self._run(name, None, torch.float32)
        dev, dev_s = self._run(name, self.device, self.dtype)
        ratio_diff = dev.perplexity_ratio / cpu.perplexity_ratio - 1
        kl_bound = KL_TOLERANCE * cpu.kl_per_token + 2 * self.floor
        kl_diff = dev.kl_per_token - cpu.kl_per_token
        where = f"{self.device.type}, {str(self.dtype).removeprefix('torch.')}"
        m = parity_measures(name)
        return [
            Row(name, m[0], cpu.perplexity_ratio, "", "float32"),
            Row(name, m[1], dev.perplexity_ratio, "", f"{where}; Δ {ratio_diff:+.2%}",
                f"Δ within ±{RATIO_TOLERANCE:.0%}", _verdict(abs(ratio_diff) <= RATIO_TOLERANCE)),
            Row(name, m[2], cpu.kl_per_token, "nats/token", "float32"),
            Row(name, m[3], dev.kl_per_token, "nats/token", f"{where}; Δ {kl_diff:+.3g}",
                f"Δ within ±({KL_TOLERANCE:.0%} of CPU + 2 x floor) = ±{kl_bound:.3g}",
                _verdict(abs(kl_diff) <= kl_bound)),
            Row(name, m[4], cpu_s, "s"),
            Row(name, m[5], dev_s, "s", where),
        ]  # fmt: skip


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
