"""Parameters of ``svd`` (torch-free): training-free, activation-whitened factorization."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from slimforge.compression.methods.factorization.config import FactorizationConfig
from slimforge.compression.methods.registry import register_method
from slimforge.compression.planning import LinearShape, RankPlan

__all__ = ["SvdConfig"]


@register_method("slimforge.compression.methods.svd.method:SvdMethod")
class SvdConfig(FactorizationConfig):
    """Activation-aware low-rank factorisation (SVD-LLM style), training-free.

    Each selected Linear W (out x in) becomes B·A with rank r. With ``whitening`` the input
    Gram matrix X·Xᵀ of the calibration activations is Cholesky-factorised (S), W·S is truncated
    by SVD and un-whitened, which minimises the output error on the calibration data instead of
    the weight error. Ranks are allocated so the whole model reaches the job's target count.
    """

    name: Literal["svd"] = "svd"
    allocation: Literal["uniform", "energy"] = Field(
        default="uniform",
        description="How ranks are spread over modules: 'uniform' keeps the same fraction "
        "of every matrix's break-even rank; 'energy' (our sensitivity allocation) measures "
        "each matrix's (whitened) singular values and gives rank where it keeps the most "
        "output energy per parameter.",
    )

    def plan(
        self,
        linears: Sequence[LinearShape],
        *,
        total_params: int,
        target_params: int,
        spectra: Mapping[str, Sequence[float]] | None = None,
    ) -> RankPlan:
        """Ranks for these shapes: pure arithmetic, shared by the worker and the API's
        submit-time check. Raises ``UnreachableTargetError`` with the reachable range.

        With ``allocation="energy"`` the ranks need measured ``spectra``; without them this
        returns the uniform plan, which has the same reachable range (a shape-only estimate)."""
        return self._plan_spread(
            self._targeted(linears),
            total_params=total_params,
            target_params=target_params,
            spectra=spectra if self.allocation == "energy" else None,
            method="svd",
        )
