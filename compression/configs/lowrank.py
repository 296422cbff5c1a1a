"""Parameters of the low-rank methods: ``svd`` (training-free) and ``lillama`` (distilled)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from slimforge.compression.configs.base import _MethodBase
from slimforge.compression.planning import (
    LinearShape,
    RankPlan,
    plan_layerwise,
    plan_uniform,
)
from slimforge.compression.planning_energy import plan_by_energy

__all__ = ["DEFAULT_TARGET_MODULES", "LILLAMA_DEFAULT_LR", "LillamaConfig", "SvdConfig"]

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


# The paper's rate. Measured on SmolLM2-135M at -20 % with 16k calibration tokens (one epoch,
# batch 8 x 256): 8.6e-5 -> eval ppl 47.0 (block losses fall), 3e-4 -> 45.4 (slightly better ppl
# but the mean block loss rises), 1e-3 diverges (ppl 753 with 4k tokens); the tiny test models
# are unstable above ~1e-4 too. A higher default is not clearly better, so the paper's stays.
LILLAMA_DEFAULT_LR = 8.6e-5


class _LowRankBase(_MethodBase):
    """Fields and rank planning shared by the low-rank methods."""

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


class SvdConfig(_LowRankBase):
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


class LillamaConfig(_LowRankBase):
    """Low-rank feature distillation (Lillama): factorise, then train the factors block by block.

    Each selected Linear W (out x in) becomes B·A, initialised by (whitened) SVD, and the factors
    of every decoder block are trained locally with AdamW so the block's output matches the
    teacher's: loss per token mean|a - y| - log sigmoid(cos(a, y)), on the teacher's block input and
    on the input coming from the already-compressed blocks below (1:1). No global backprop;
    memory stays at about one block plus the calibration activations.
    """

    name: Literal["lillama"] = "lillama"
    rank_strategy: Literal["uniform", "bottom", "top", "energy"] = Field(
        default="uniform",
        description="'uniform': every matrix keeps the same fraction of its break-even rank. "
        "'bottom' (the paper's default) / 'top': whole blocks are factorised at the thinnest "
        "rank from the first (last) block on until the target is met; the boundary block's "
        "ranks rise in rank_multiple steps to land on the target; other blocks stay dense. "
        "'energy' (ours, by measured sensitivity): a teacher pass measures every matrix's "
        "whitened singular values, and rank goes where it keeps the most output energy per "
        "parameter.",
    )
    layer_rank_fraction: float | None = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="With 'bottom'/'top': the factorised blocks keep this fraction of each "
        "matrix's break-even rank (the paper's large models keep about a quarter of their "
        "width; on small models the thinnest rank destroys a block). If every block at this "
        "fraction is not enough for the target, blocks go down to min_rank. None: always "
        "min_rank, as in the reference code.",
    )
    learning_rate: float = Field(
        default=LILLAMA_DEFAULT_LR,
        gt=0.0,
        le=1.0,
        description="AdamW learning rate of the factors (the paper's 8.6e-5). Up to ~3e-4 "
        "helps slightly with small token budgets; 1e-3 diverges on SmolLM2.",
    )
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0, description="AdamW weight decay.")
    batch_size: int = Field(
        default=8, ge=1, le=1024, description="Calibration sequences per optimiser step."
    )
    epochs: int = Field(
        default=1, ge=1, le=100, description="Passes over the calibration data per block."
    )
    max_steps_per_block: int | None = Field(
        default=None, ge=1, description="Stop training a block after this many steps."
    )
    activation_memory_gb: float | None = Field(
        default=None,
        gt=0,
        description="CPU memory for the calibration activations (teacher input, student input, "
        "teacher output): past it, batches are written to the worker's scratch folder and read "
        "back when needed. None keeps everything in memory (fine up to a few million tokens of "
        "a 4k-wide model).",
    )

    def plan(
        self,
        linears: Sequence[LinearShape],
        *,
        total_params: int,
        target_params: int,
        spectra: Mapping[str, Sequence[float]] | None = None,
    ) -> RankPlan:
        """Ranks for these shapes (pure arithmetic, as ``SvdConfig.plan``); raises
        ``UnreachableTargetError`` with the reachable range. ``rank_strategy="energy"`` needs
        measured ``spectra``; without them the uniform plan stands in (same reachable range)."""
        shapes = self._targeted(linears)
        if self.rank_strategy in ("uniform", "energy"):
            return self._plan_spread(
                shapes,
                total_params=total_params,
                target_params=target_params,
                spectra=spectra if self.rank_strategy == "energy" else None,
                method="lillama",
            )
        return plan_layerwise(
            shapes,
            total_params=total_params,
            target_params=target_params,
            order=self.rank_strategy,
            min_rank=self.min_rank,
            rank_multiple=self.rank_multiple,
            method="lillama",
            layer_fraction=self.layer_rank_fraction,
        )
