"""The method protocol, its result, and the registry of methods by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from slimforge.compression.configs import LillamaConfig, SvdConfig
from slimforge.compression.lowrank import count_parameters, linear_shapes
from slimforge.compression.moe import split_fused_experts
from slimforge.compression.planning import RankPlan
from slimforge.compression.progress import Reporter

__all__ = [
    "Method",
    "MethodResult",
    "available_methods",
    "get_method",
    "plan_lowrank",
    "register",
]


@dataclass
class MethodResult:
    """What a method did to the model (which it modified in place)."""

    ranks: dict[str, int]
    params_before: int
    params_after: int
    tokens_used: int
    details: dict[str, Any] = field(default_factory=dict)


class Method(Protocol):
    """A compression method: modifies ``model`` in place to about ``target_params`` parameters.

    Implementations raise ``UnreachableTargetError`` before any expensive work (plan from shapes
    first, then calibrate), call ``reporter.check_cancelled()`` between units of work and send at
    most about one ``reporter.event`` per decoder block or batch.
    """

    name: str

    def plan(self, model: nn.Module, config: Any, *, target_params: int) -> RankPlan:
        """What ``run`` would do, from shapes only (cheap); raises ``UnreachableTargetError``."""
        ...

    def run(
        self,
        model: nn.Module,
        config: Any,
        *,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter,
        workdir: Path | None = None,
    ) -> MethodResult:
        """Compress ``model`` in place and describe the result. ``workdir`` (optional) is a
        scratch folder that survives a crashed attempt of the same job, for checkpoints.
        Methods with ``streams_layers = True`` also take ``device=``: where to compute, one
        decoder layer at a time, while the model stays where it is."""
        ...


def plan_lowrank(
    model: nn.Module, config: SvdConfig | LillamaConfig, *, target_params: int
) -> RankPlan:
    """The shape-only rank plan of a low-rank method for ``model``; raises
    UnreachableTargetError. Fused MoE experts are split into Linears first (same outputs)."""
    split_fused_experts(model)
    shapes = linear_shapes(model, config.target_modules)
    if not shapes:
        raise ValueError(f"no Linear layers named {config.target_modules} in decoder blocks")
    return config.plan(shapes, total_params=count_parameters(model), target_params=target_params)


_REGISTRY: dict[str, Method] = {}
_T = TypeVar("_T")


def register(name: str) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: register an instance of the class as method ``name``."""

    def deco(cls: type[_T]) -> type[_T]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        instance: Any = cls()
        instance.name = name
        _REGISTRY[name] = instance
        return cls

    return deco


def get_method(name: str) -> Method:
    """The registered method called ``name`` (ValueError listing the known ones otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(available_methods()) or "none"
        raise ValueError(f"unknown compression method {name!r}; available: {known}") from None


def available_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_REGISTRY)
