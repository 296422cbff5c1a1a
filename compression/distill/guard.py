"""kd's guard: held-back text on which kd must not make the student worse than it received it.

kd trains on the calibration text and its training loss is noisy from batch to batch, so it
cannot tell a stage that helped from one that diverged (measured: at a learning rate of 2e-4,
kd brought minitron students closer to the teacher on held-out general English and pushed
svd and lillama students at -20 % and -30 % further away, docs/BENCHMARKS.md). The guard
measures KL(teacher ‖ student) on kd text the stage does not train on, before and after; the
caller keeps the better student.

Limits: the held-back blocks are the kd text's last ones, and when the kd text is the
calibration text (the default) the method may have fitted them (and ``auto`` scored its
candidates on them), so the KL before kd can be in-sample and the guard leans toward undoing
kd. It measures on the kd text's domain only: a kd that helped elsewhere but not there is
undone too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slimforge.compression.evaluation import fidelity

__all__ = ["GUARD_SHARE", "GuardResult", "guard_kl", "split_guard"]

GUARD_SHARE = 1 / 16  # share of the kd blocks held back (at least one, from 4 blocks on)
MIN_BLOCKS = 4


@dataclass(frozen=True)
class GuardResult:
    """KL(teacher ‖ student) in nats per token on the held-back blocks before and after kd,
    how many tokens they hold, and which student was kept ("distilled" or "before")."""

    kl_before: float
    kl_after: float
    tokens: int
    kept: str


def split_guard(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(training blocks, held-back blocks or None): the last ``ceil(n * GUARD_SHARE)`` of the
    ``n`` blocks [n, seq_len] are held back when ``n >= MIN_BLOCKS``; fewer leave no guard."""
    n = blocks.shape[0]
    if n < MIN_BLOCKS:
        return blocks, None
    held = max(1, -(-n // round(1 / GUARD_SHARE)))
    return blocks[: n - held], blocks[n - held :]


def guard_kl(teacher: nn.Module, student: nn.Module, blocks: torch.Tensor) -> float:
    """KL(teacher ‖ student) in nats per scored token on ``blocks`` [n, seq_len]
    (:func:`slimforge.compression.evaluation.fidelity`, no bootstrap)."""
    return fidelity(teacher, student, blocks, n_resamples=1).kl_per_token
