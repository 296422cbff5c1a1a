"""Parameters of ``minitron`` (torch-free): structured width/depth pruning to a standard
architecture, and the submit-time checks of its shape search."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from slimforge.compression.methods.registry import register_method
from slimforge.compression.model_shapes import ModelShapes
from slimforge.compression.parameters import MethodParameters, Parameters
from slimforge.compression.pruning.arch import arch_from_config
from slimforge.compression.pruning.pins import check_pins
from slimforge.compression.pruning.search import search_space

__all__ = ["MinitronConfig", "PinnedShape", "PruningAxis"]

PruningAxis = Literal["depth", "heads", "mlp", "hidden", "experts"]


def _all_axes() -> list[PruningAxis]:
    return ["depth", "heads", "mlp", "hidden", "experts"]


class PinnedShape(Parameters):
    """Fix some (or all) of the pruned shape's sizes; the search fills in the rest."""

    hidden_size: int | None = Field(default=None, ge=1)
    intermediate_size: int | None = Field(default=None, ge=1)
    num_attention_heads: int | None = Field(default=None, ge=1)
    num_hidden_layers: int | None = Field(default=None, ge=1)
    num_local_experts: int | None = Field(
        default=None, ge=1, description="Experts per layer (mixture-of-experts models)."
    )


@register_method("slimforge.compression.methods.minitron.method:MinitronMethod")
class MinitronConfig(MethodParameters):
    """Structured pruning (Minitron): remove heads, MLP neurons, hidden channels, layers and
    (mixture-of-experts models) experts.

    Importance comes from forward passes on the calibration text (head output norms, MLP
    activations, norm-layer outputs; layers by Block Importance 1 - cos(in, out) or by the
    perplexity rise when removed). Every block is cut to the same widths, so the result is a
    standard architecture that stock transformers and vLLM load without custom code. Candidate
    shapes within 1 % of the target are ranked by perplexity on held-out calibration text and
    the best is kept; add a ``distill`` stage (kd) to recover quality.
    """

    name: Literal["minitron"] = "minitron"
    axes: list[PruningAxis] = Field(
        default_factory=_all_axes,
        min_length=1,
        description="What may shrink: 'depth' (layers), 'heads' (query heads, the same number "
        "per GQA group), 'mlp' (intermediate size; of each expert in a mixture of experts), "
        "'hidden' (hidden size), 'experts' (experts per layer, the least routed-to go; "
        "ignored by dense models). The MLP width is solved to land on the target, so include "
        "'mlp' unless the shape is pinned.",
    )
    hidden_multiple: int = Field(
        default=64, ge=1, le=4096, description="Pruned hidden sizes are multiples of this."
    )
    mlp_multiple: int = Field(
        default=32, ge=1, le=4096, description="Pruned MLP widths are multiples of this."
    )
    layer_metric: Literal["block_importance", "perplexity"] = Field(
        default="block_importance",
        description="How layers are ranked: 'block_importance' (1 - cos between a block's "
        "input and output, one pass) or 'perplexity' (the rise when the block alone is "
        "removed, one evaluation per block on the held-out text).",
    )
    contiguous_layers: bool = Field(
        default=False,
        description="Drop one contiguous run of blocks (never the first or last) instead of "
        "the least important blocks wherever they are.",
    )
    shape: PinnedShape | None = Field(
        default=None,
        description='Pin sizes of the result (e.g. {"num_hidden_layers": 24}); only '
        "candidates with these values are considered.",
    )
    max_candidates: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Candidate shapes evaluated (those removing the least importance first).",
    )
    search_tokens: int = Field(
        default=4096,
        ge=16,
        description="Calibration tokens held out (the last blocks) to score candidate shapes; "
        "at most a quarter of the calibration blocks.",
    )
    batch_size: int = Field(
        default=4, ge=1, le=1024, description="Sequences per forward pass when measuring."
    )
    refit: bool = Field(
        default=True,
        description="After cutting MLP neurons, refit each block's down projection by least "
        "squares so the kept neurons reproduce the original MLP output on the calibration text "
        "(training-free; one more forward pass, and intermediate_size² float64 numbers per "
        "layer in memory). Dense models whose hidden size is kept; ignored otherwise.",
    )
    refit_sequential: bool = Field(
        default=False,
        description="Refit the blocks bottom-up on the pruned model's own activations, "
        "against the original blocks' outputs, so each MLP also makes up for the error the "
        "pruned blocks below it left (SparseGPT's sequential order; about two more passes over "
        "the calibration text, for the chosen shape; candidates are ranked with the plain "
        "refit). Off (default): every block from the original's activations. Measured worse "
        "on SmolLM2 at -20 % (docs/BENCHMARKS.md, lever table), so off until its target "
        "includes the residual stream.",
    )
    refit_max_gib: float = Field(
        default=8.0,
        gt=0.0,
        le=4096.0,
        description="Most memory (GiB) the refit's input Grams may take (layers x "
        "intermediate_size² x 8 bytes: 0.6 GiB for SmolLM2-135M, 49 GiB for a Llama-3-8B); "
        "over it the refit is skipped, with a warning event.",
    )
    refit_ridge: float = Field(
        default=1e-3,
        ge=0.0,
        le=1000.0,
        description="Ridge term of the refit, relative to the mean activation energy of the "
        "kept neurons. It pulls the refit toward the kept neurons' original weights: larger "
        "stays closer to plain pruning (and to the source's domain), smaller reproduces the "
        "calibration text's MLP output more closely.",
    )

    local_distill_epochs: int = Field(
        default=0,
        ge=0,
        le=100,
        description="After pruning (and the refit), train each narrowed MLP alone (gate, up "
        "and down) for this many passes over the calibration text to reproduce the original "
        "MLP's output on the original's inputs: Lillama's local distillation applied to a "
        "pruned MLP. 0: off. Dense models whose hidden size is kept; ignored otherwise.",
    )
    local_distill_lr: float = Field(
        default=1e-4,
        gt=0.0,
        le=1.0,
        description="Adam learning rate of the local distillation.",
    )

    @model_validator(mode="after")
    def _axes_unique(self) -> MinitronConfig:
        if len(set(self.axes)) != len(self.axes):
            raise ValueError(f"'axes' lists a value twice: {self.axes}")
        return self

    def standard_architecture(self) -> bool:
        """Yes: the source's own transformers class with smaller sizes in its config."""
        return True

    def check_model(self, shapes: ModelShapes) -> None:
        """Pinned sizes the search can produce for this model (``ParameterConflict``
        otherwise); models whose ``config.json`` does not describe them are left to the
        worker."""
        arch = arch_from_config(shapes.config, shapes.total_params)
        if arch is not None:
            check_pins(arch, self)

    def check_target(self, shapes: ModelShapes, target_params: int) -> None:
        """Run the shape search on the shape ``config.json`` describes (when it accounts for
        every parameter of the weight files); raises ``UnreachableTargetError`` like the
        worker would."""
        arch = arch_from_config(shapes.config, shapes.total_params)
        if arch is not None:
            search_space(arch, self, target_params=target_params)
