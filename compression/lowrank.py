"""The low-rank Linear replacement and helpers to find and swap a model's Linear layers.

``LowRankLinear`` is also shipped, by source, inside exported artifacts (see ``export.py``), so
its class body must only use ``torch``/``nn`` and nothing else from this package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from slimforge.compression.planning import LinearShape

__all__ = [
    "LowRankLinear",
    "count_parameters",
    "dense_weight",
    "find_linears",
    "linear_shapes",
    "set_module",
]

try:  # GPT-2 style models use Conv1D (weight stored in x out); optional so this file stays small.
    from transformers.pytorch_utils import Conv1D as _Conv1D

    _LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, _Conv1D)
except ImportError:  # pragma: no cover - transformers is a dependency of the ml extra
    _LINEAR_TYPES = (nn.Linear,)


class LowRankLinear(nn.Module):
    """y = second(first(x)): a rank-r factorisation B·A of a Linear W (out x in).

    ``first`` holds A (r x in, no bias), ``second`` holds B (out x r) and the original bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.first = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.second = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., r] -> [..., out]
        return self.second(self.first(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The weight of a Linear-like module as out x in (Conv1D stores it transposed)."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight if isinstance(module, nn.Linear) else weight.t()


def _is_excluded(model: nn.Module, name: str, module: nn.Module) -> bool:
    # Never factorise the output head or anything tied to the embeddings.
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    return module is head or name.split(".")[-1] in {"lm_head", "embed_out", "wte", "embed_tokens"}


def find_linears(model: nn.Module, target_modules: Sequence[str]) -> dict[str, nn.Module]:
    """Linear (or GPT-2 Conv1D) layers inside the decoder blocks whose last name is targeted.

    A decoder block is recognised by a numeric path component (a ``ModuleList`` entry such as
    ``model.layers.3``); ``lm_head`` and embeddings are never returned. Names are full paths.
    """
    wanted = set(target_modules)
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not isinstance(module, _LINEAR_TYPES):
            continue
        parts = name.split(".")
        if parts[-1] not in wanted or not any(p.isdigit() for p in parts[:-1]):
            continue
        if _is_excluded(model, name, module):
            continue
        found[name] = module
    return found


def linear_shapes(model: nn.Module, target_modules: Sequence[str]) -> list[LinearShape]:
    """Shapes of :func:`find_linears`, in module order, for the planner."""
    shapes = []
    for name, module in find_linears(model, target_modules).items():
        out_features, in_features = dense_weight(module).shape
        bias = getattr(module, "bias", None) is not None
        shapes.append(LinearShape(name, int(in_features), int(out_features), bias))
    return shapes


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` with ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (``parameters()`` yields a tied weight once)."""
    return sum(p.numel() for p in model.parameters())
