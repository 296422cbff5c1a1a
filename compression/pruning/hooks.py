"""Forward hooks that record what a module sees or returns (the refits and the local
distillation fit pruned blocks to what the original blocks did)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["record_io"]


def record_io(
    module: nn.Module,
    store: list[torch.Tensor],
    what: Literal["in", "out"],
    *,
    rows_on_cpu: bool = False,
) -> RemovableHandle:
    """A forward hook on ``module`` appending its first input (``"in"``) or its output
    (``"out"``) to ``store``, detached; with ``rows_on_cpu``, as float32 rows [tokens, features]
    on the CPU (collected over many batches without holding device memory)."""

    def hook(_: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        x = (args[0] if what == "in" else out).detach()
        store.append(x.reshape(-1, x.shape[-1]).float().cpu() if rows_on_cpu else x)

    return module.register_forward_hook(hook)
