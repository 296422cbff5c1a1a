"""Parameters of ``lillama`` (torch-free): factorization trained by local distillation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from slimforge.compression.methods.factorization.config import FactorizationConfig
from slimforge.compression.methods.registry import register_method
from slimforge.compression.planning import LinearShape, RankPlan, plan_layerwise

__all__ = ["LILLAMA_DEFAULT_LR", "LillamaConfig"]

# The paper's rate. Measured on SmolLM2-135M at -20 % with 16k calibration tokens (one epoch,
# batch 8 x 256): 8.6e-5 -> eval ppl 47.0 (block losses fall), 3e-4 -> 45.4 (slightly better ppl
# but the mean block loss rises), 1e-3 diverges (ppl 753 with 4k tokens); the tiny test models
# are unstable above ~1e-4 too. A higher default is not clearly better, so the paper's stays.
LILLAMA_DEFAULT_LR = 8.6e-5


@register_method("slimforge.compression.methods.lillama.method:LillamaMethod")
class LillamaConfig(FactorizationConfig):
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
