"""Parameters and planning shared by the factorization methods (``svd``, ``lillama``).

A factorization method replaces Linear layers W (out x in) by low-rank products B·A
(``LowRankLinear``); this module is torch-free, so the API plans and checks them at submit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import Field

from slimforge.compression.model_shapes import ModelShapes
from slimforge.compression.parameters import MethodParameters, ParameterConflict
from slimforge.compression.planning import (
    LinearShape,
    RankPlan,
    plan_uniform,
)
from slimforge.compression.planning_energy import plan_by_energy

__all__ = ["DEFAULT_TARGET_MODULES", "FactorizationConfig"]

# Decoder-block Linear layers of the common architectures (Llama, Mistral, Qwen2, Phi, GPT-2 …)
# and of Mamba's mixer (in_proj, x_proj, out_proj; dt_proj is too thin to gain from a factor).
DEFAULT_TARGET_MODULES = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "dense",
    "fc1",
    "fc2",
    "c_attn",
    "c_proj",
    "c_fc",
    "qkv_proj",
    "gate_up_proj",
    "in_proj",
    "x_proj",
    "out_proj",
]


class FactorizationConfig(MethodParameters):
    """Fields and rank planning shared by the factorization methods."""

    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        description="Names (last component) of the Linear modules that may be factorised. "
        "lm_head and embeddings are never factorised.",
    )
    rank_multiple: int = Field(
        default=8, ge=1, le=256, description="Ranks are rounded to a multiple of this."
    )
    min_rank: int = Field(default=8, ge=1, description="No factor is thinner than this.")
    whitening: bool = Field(
        default=True,
        description="Whiten with the Cholesky factor of the input Gram matrix (SVD-LLM). "
        "False gives plain weight SVD (a baseline, and the reference Lillama code's "
        "initialisation).",
    )
    damping: float = Field(
        default=1e-4,
        ge=0.0,
        le=1.0,
        description="Added to the Gram matrix diagonal, relative to its mean, so the "
        "Cholesky factorisation exists for rank-deficient activations.",
    )

    def standard_architecture(self) -> bool:
        """No: factorised layers are ``LowRankLinear`` modules (B·A), which only slimforge's
        remote code defines; llama.cpp and vLLM know no such layer."""
        return False

    def _targeted(self, linears: Sequence[LinearShape]) -> list[LinearShape]:
        wanted = set(self.target_modules)
        return [s for s in linears if s.name.rsplit(".", 1)[-1] in wanted]

    def _plan_spread(
        self,
        shapes: Sequence[LinearShape],
        *,
        total_params: int,
        target_params: int,
        spectra: Mapping[str, Sequence[float]] | None,
        method: str,
    ) -> RankPlan:
        """By measured ``spectra`` (energy allocation) when given, else uniform."""
        if spectra is not None:
            return plan_by_energy(
                shapes,
                spectra,
                total_params=total_params,
                target_params=target_params,
                min_rank=self.min_rank,
                rank_multiple=self.rank_multiple,
                method=method,
            )
        return plan_uniform(
            shapes,
            total_params=total_params,
            target_params=target_params,
            min_rank=self.min_rank,
            rank_multiple=self.rank_multiple,
            method=method,
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
        submit-time check. Raises ``UnreachableTargetError`` with the reachable range."""
        raise NotImplementedError

    def check_model(self, shapes: ModelShapes) -> None:
        """``target_modules`` must name Linear layers the model's blocks have, and ``min_rank``
        must leave some targeted matrix a factor thinner than itself."""
        if not shapes.linears:
            return
        present = sorted({s.name.rsplit(".", 1)[-1] for s in shapes.linears})
        targeted = self._targeted(shapes.linears)
        if not targeted:
            raise ParameterConflict(
                "target_modules",
                value=self.target_modules,
                model_value=present,
                working_value=present,
                reason="names no Linear layer of the model's decoder blocks",
            )
        widest = max(min(s.in_features, s.out_features) for s in targeted)
        if self.min_rank >= widest:
            working = max(1, widest // 4 // self.rank_multiple * self.rank_multiple)
            raise ParameterConflict(
                "min_rank",
                value=self.min_rank,
                model_value=widest,
                working_value=working,
                reason=f"no targeted matrix is wider than {widest} (its smaller side), so "
                "a factor of this rank saves nothing",
            )

    def check_target(self, shapes: ModelShapes, target_params: int) -> None:
        """Plan from the shapes; raises ``UnreachableTargetError`` like the worker would."""
        if shapes.linears:
            self.plan(shapes.linears, total_params=shapes.total_params, target_params=target_params)
