"""Per-batch activation lists that live in CPU memory up to a budget, then on disk.

Block-local distillation keeps three activation lists per layer (teacher input, student input,
teacher output), each ``tokens x hidden`` values: 13 M tokens of a 4096-wide model in bf16 are
106 GB per list. A :class:`SpillPool` gives every list the same byte budget in RAM; batches past
it are written to files in the pool's folder and read back when indexed. Files are removed when
their list is garbage-collected (and with the folder when the pool is closed).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import torch

__all__ = ["ActivationList", "SpillPool"]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class SpillPool:
    """Makes :class:`ActivationList` objects sharing a per-list RAM budget and a spill folder.

    ``list_budget_bytes`` is the RAM each list may use (None: no limit, nothing spills).
    ``folder`` receives spilled batches; None creates a temporary folder on first spill.
    """

    def __init__(self, list_budget_bytes: int | None, folder: Path | None = None) -> None:
        self.list_budget_bytes = list_budget_bytes
        self._folder = folder
        self._owned: Path | None = None
        self.spilled_bytes = 0  # total ever written, for the job's metrics

    def folder(self) -> Path:
        if self._folder is None:
            self._owned = self._folder = Path(tempfile.mkdtemp(prefix="slimforge-act-"))
        self._folder.mkdir(parents=True, exist_ok=True)
        return self._folder

    def new(self, tensors: Sequence[torch.Tensor] = ()) -> ActivationList:
        """A new list, filled with ``tensors`` (moved to CPU)."""
        out = ActivationList(self)
        for t in tensors:
            out.append(t)
        return out

    def close(self) -> None:
        """Remove a temporary folder this pool created."""
        if self._owned is not None:
            shutil.rmtree(self._owned, ignore_errors=True)
            self._owned = self._folder = None


class ActivationList(Sequence[torch.Tensor]):
    """An append-only sequence of CPU tensors, some of them stored on disk."""

    def __init__(self, pool: SpillPool) -> None:
        self._pool = pool
        self._items: list[torch.Tensor | Path] = []
        self._ram = 0
        self._files: list[Path] = []
        self._finalizer = weakref.finalize(self, _remove, self._files)

    def append(self, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().cpu()
        size = tensor.numel() * tensor.element_size()
        budget = self._pool.list_budget_bytes
        if budget is None or self._ram + size <= budget:
            self._items.append(tensor)
            self._ram += size
            return
        path = self._pool.folder() / f"{uuid.uuid4().hex}.pt"
        torch.save(tensor.contiguous(), path)
        self._files.append(path)
        self._items.append(path)
        self._pool.spilled_bytes += size

    @property
    def spilled(self) -> int:
        """How many batches live on disk."""
        return len(self._files)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> list[torch.Tensor]: ...

    def __getitem__(self, index: int | slice) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        item = self._items[index]
        if isinstance(item, Path):
            loaded: torch.Tensor = torch.load(item, weights_only=True)
            return loaded
        return item

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(len(self)):
            yield self[i]
