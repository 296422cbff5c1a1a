"""Per-block checkpoints of a block-local distillation, so a killed job resumes where it died.

A folder holds ``manifest.json`` (what the run is: plan, config, a fingerprint of the
calibration tokens) and, for every finished block, ``block_<i>.safetensors`` (the block's
state after training, in the model's dtype) and ``block_<i>.json`` (its progress record).
Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.
A manifest that differs from the current run's (another plan, other data) discards the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["BlockCheckpoints", "tokens_fingerprint"]


def tokens_fingerprint(blocks: torch.Tensor) -> str:
    """SHA-256 of the calibration token ids (shape included)."""
    digest = hashlib.sha256(str(tuple(blocks.shape)).encode())
    digest.update(blocks.detach().to(torch.int64).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class BlockCheckpoints:
    """Checkpoints of one run in ``folder``; see the module docstring for the layout."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        """Open ``folder`` for the run described by ``manifest`` (JSON-serialisable).

        Existing checkpoints are kept only if they were written for an equal manifest.
        """
        self.folder = folder
        self.manifest = json.loads(json.dumps(manifest))  # normalise (tuples -> lists …)
        path = folder / "manifest.json"
        if path.exists():
            try:
                same = json.loads(path.read_text()) == self.manifest
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _write_atomic(path, json.dumps(self.manifest, sort_keys=True).encode())

    def get_json(self, name: str) -> Any:
        """The object stored under ``name`` by :meth:`put_json`, None if there is none."""
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def put_json(self, name: str, value: Any) -> None:
        """Store a JSON-serialisable object under ``name`` (atomically)."""
        _write_atomic(self.folder / f"{name}.json", json.dumps(value, sort_keys=True).encode())

    def _paths(self, index: int) -> tuple[Path, Path]:
        stem = f"block_{index:05d}"
        return self.folder / f"{stem}.safetensors", self.folder / f"{stem}.json"

    def finished(self) -> list[int]:
        """Indices of the blocks with a complete checkpoint."""
        out = []
        for info in sorted(self.folder.glob("block_*.json")):
            index = int(info.stem.split("_")[1])
            if self._paths(index)[0].exists():
                out.append(index)
        return out

    def has(self, index: int) -> bool:
        weights, info = self._paths(index)
        return weights.exists() and info.exists()

    def save(self, index: int, block: nn.Module, info: dict[str, Any]) -> None:
        """Store the block's weights, then its record (the record marks it complete)."""
        weights, record = self._paths(index)
        state = {k: v.detach().contiguous().cpu() for k, v in block.state_dict().items()}
        tmp = weights.with_name(weights.name + ".tmp")
        save_file(state, str(tmp))
        os.replace(tmp, weights)
        _write_atomic(record, json.dumps(info, sort_keys=True).encode())

    def load(self, index: int, block: nn.Module) -> dict[str, Any]:
        """Load block ``index``'s weights into ``block`` (same structure); returns its record."""
        weights, record = self._paths(index)
        device = next(block.parameters()).device
        block.load_state_dict(load_file(str(weights), device=str(device)), strict=True)
        info: dict[str, Any] = json.loads(record.read_text())
        return info
