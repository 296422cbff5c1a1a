"""The torch side shared by the factorization methods: the shape-only plan and the swap of a
Linear for its (whitened) SVD factors."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from slimforge.compression.lowrank import count_parameters, dense_weight, linear_shapes, set_module
from slimforge.compression.methods.factorization.config import FactorizationConfig
from slimforge.compression.methods.factorization.factors import (
    cholesky_whitener,
    lowrank_from,
    truncated_factors,
    whitened_factors_from,
)
from slimforge.compression.methods.method import Method
from slimforge.compression.moe import split_fused_experts
from slimforge.compression.planning import RankPlan

__all__ = ["FactorizationMethod", "factorize_module"]

F = TypeVar("F", bound=FactorizationConfig)


class FactorizationMethod(Method[F]):
    """A method that replaces targeted Linears by ``LowRankLinear`` factors."""

    def _plan(self, model: nn.Module, config: F, target_params: int) -> RankPlan:
        """The shape-only rank plan; raises UnreachableTargetError. Fused MoE experts are split
        into Linears first (same outputs)."""
        split_fused_experts(model)
        shapes = linear_shapes(model, config.target_modules)
        if not shapes:
            raise ValueError(f"no Linear layers named {config.target_modules} in decoder blocks")
        return config.plan(
            shapes, total_params=count_parameters(model), target_params=target_params
        )


def factorize_module(
    root: nn.Module,
    name: str,
    rank: int,
    *,
    gram: torch.Tensor | None,
    damping: float,
    whiteners: dict[int, torch.Tensor],
) -> float:
    """Replace ``root``'s Linear ``name`` by its rank-``rank`` factors, whitened by ``gram``
    [in, in] when given (else plain SVD); returns the kept share of ‖W·S‖² (‖W‖²).

    ``whiteners`` caches S per Gram tensor (``id``), so modules that share their input (q/k/v)
    factorise the Gram once.
    """
    module = root.get_submodule(name)
    weight = dense_weight(module).detach()  # [out, in]
    if gram is not None:
        s = whiteners.get(id(gram))
        if s is None:
            s = whiteners[id(gram)] = cholesky_whitener(gram, damping)
        a, b, kept = whitened_factors_from(weight, s, rank)
    else:
        a, b, kept = truncated_factors(weight.to(torch.float64), rank)
    set_module(root, name, lowrank_from(module, a, b, rank))
    return kept
