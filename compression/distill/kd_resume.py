"""A resumable end-to-end distillation: ``distill_logits`` saves its whole training state now
and then, so a killed job's ``kd`` stage goes on from the last save instead of from step 0.

One file, ``kd_state.pt``, written to a temporary name and renamed (a crash never leaves half
of one). It holds a manifest of the run (config, steps, batch, the trainable parameters'
shapes, a fingerprint of the tokens); a state saved by another run is ignored. The state is
what makes the next steps exactly those of an uninterrupted run: the trainable parameters,
AdamW's moments, the step, the seeded batch order and its generator, the loss bookkeeping.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["KdCheckpoint"]

log = logging.getLogger("slimforge.compression")

STATE_FILE = "kd_state.pt"


class KdCheckpoint:
    """Where a distillation keeps its state (``folder``) and how often it saves it: after a
    step, once ``every_seconds`` have passed since the start or the last save (0: every step)."""

    def __init__(
        self,
        folder: Path,
        *,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = folder / STATE_FILE
        self.every_seconds = every_seconds
        self.clock = clock
        self._last = clock()

    def due(self) -> bool:
        """Whether it is time to save again."""
        return self.clock() - self._last >= self.every_seconds

    def save(self, manifest: dict[str, Any], state: dict[str, Any]) -> None:
        """Write ``state`` for the run ``manifest`` describes (atomically)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as f:
            torch.save({"manifest": manifest, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._last = self.clock()

    def load(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The state last saved for this very run, else None (none saved, another run's, or
        unreadable: then the distillation starts from step 0)."""
        if not self.path.exists():
            return None
        try:
            state: dict[str, Any] = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file must not fail the job: start over
            log.warning("ignoring unreadable distillation state %s: %s", self.path, exc)
            return None
        if state.get("manifest") != manifest:
            return None
        return state
