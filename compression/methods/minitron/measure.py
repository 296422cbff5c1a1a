"""What minitron measures on the unpruned model before it cuts: activation importance, the
layer-removal scores (``layer_metric: "perplexity"``) and the MLP input Grams of the refit.

These depend only on the original weights and the calibration blocks, so one
:class:`Measurements` can serve several prunings cut from copies of the same model on the same
blocks: ``auto`` builds its MLP-only, width and depth candidates that way and measures once
instead of once per candidate (about 35 s each for SmolLM2-135M on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from slimforge.compression.calibration import collect_input_grams, recording_input_grams
from slimforge.compression.methods.minitron.config import MinitronConfig
from slimforge.compression.progress import Reporter
from slimforge.compression.pruning.arch import Arch
from slimforge.compression.pruning.importance import (
    Importance,
    layer_removal_scores,
    measure_importance,
)
from slimforge.compression.pruning.refit import down_projection_names

__all__ = ["REFIT_TOKENS_PER_NEURON", "Measurements", "measure_model"]

# The refit solves intermediate_size unknowns per output from the measured tokens. On SmolLM2
# (1,536 neurons) 6,144 tokens made it a large gain (docs/BENCHMARKS.md, lever table) and 1,536
# made the pruned model much worse (perplexity 96 against 55 without it: the slow GGUF test's
# job, 2026-11-30): below this many tokens per neuron it is skipped.
REFIT_TOKENS_PER_NEURON = 4


@dataclass
class Measurements:
    """Measurements of one unpruned model on one split of calibration blocks, filled in as
    prunings ask for them. ``measure`` [n, t] and ``search`` [m, t] are the blocks they were
    taken on (set by the first pruning); :func:`measure_model` raises RuntimeError when given
    other blocks (the cached figures would describe different text). The figures do not
    depend on the config's ``batch_size`` (it only groups the forward passes)."""

    measure: torch.Tensor | None = None  # [n, t] token ids: importance and Grams
    search: torch.Tensor | None = None  # [m, t] token ids: layer-removal perplexities
    importance: Importance | None = None
    layer_removal: torch.Tensor | None = None  # [layers], perplexity rise per removed block
    grams: dict[str, torch.Tensor] | None = None  # down projection name -> [inter, inter] f64
    reused: list[str] = field(default_factory=list)  # what later prunings took from here

    def release(self) -> None:
        """Drop the measured figures (the Grams take layers x intermediate² float64); a later
        pruning measures again."""
        self.importance = self.layer_removal = self.grams = None

    def bind(self, measure: torch.Tensor, search: torch.Tensor) -> None:
        """Record the blocks on first use; RuntimeError when later ones differ."""
        if self.measure is None or self.search is None:
            self.measure, self.search = measure, search
            return
        same = (
            self.measure.shape == measure.shape
            and self.search.shape == search.shape
            and torch.equal(self.measure, measure)
            and torch.equal(self.search, search)
        )
        if not same:
            raise RuntimeError("minitron measurements were taken on other calibration blocks")


def measure_model(
    model: nn.Module,
    config: MinitronConfig,
    arch: Arch,
    measure_blocks: torch.Tensor,
    search_blocks: torch.Tensor,
    reporter: Reporter,
    cache: Measurements | None = None,
) -> tuple[Importance, dict[str, torch.Tensor] | None]:
    """Importance of every prunable unit of the unpruned ``model`` (its ``layers`` scores by
    ``config.layer_metric``) and the MLP input Grams when the refit applies: None when it is
    off, the MLP is not an axis or the model is a mixture of experts, and None with a warning
    event when there are too few tokens per neuron or the Grams would pass ``refit_max_gib``.
    ``cache``: figures taken earlier on a copy of the same unpruned model on the same blocks
    are reused, and what is measured here is stored in it. Raises RuntimeError when ``cache``
    was measured on other blocks."""
    memo = Measurements() if cache is None else cache
    memo.bind(measure_blocks, search_blocks)
    t0, before = time.monotonic(), len(memo.reused)
    wants_grams = _wants_grams(config, arch, int(measure_blocks.numel()), reporter)
    had_grams = memo.grams is not None
    if memo.importance is None:
        # One forward pass for both: the Grams' hooks record while importance is measured.
        # The recorder's end_batch() is not called between batches: only down projections
        # are hooked, each fed its own tensor, so there is nothing to alias, and holding
        # the last batch's input until the pass ends costs one [b, t, intermediate] tensor.
        names = down_projection_names(model) if wants_grams and memo.grams is None else []
        with recording_input_grams(model, names) as recorder:
            memo.importance = measure_importance(
                model, measure_blocks, batch_size=config.batch_size, reporter=reporter
            )
        if names:
            grams = recorder.result(names)
            missing = [n for n in names if n not in grams]
            if missing:
                raise RuntimeError(f"no calibration input reached: {', '.join(missing[:5])}")
            memo.grams = grams
    else:
        memo.reused.append("importance")
    if wants_grams and memo.grams is None:
        memo.grams, _ = collect_input_grams(
            model, measure_blocks, down_projection_names(model), batch_size=config.batch_size
        )
    elif wants_grams and had_grams:
        memo.reused.append("grams")
    importance = _layer_scores(model, config, memo, search_blocks, reporter)
    reporter.event(
        "importance measured",
        data={
            "tokens": int(measure_blocks.numel()),
            "seconds": round(time.monotonic() - t0, 2),  # the Grams included
            "layer_scores": [round(float(x), 6) for x in importance.layers],
            "reused": memo.reused[before:],
        },
    )
    return importance, memo.grams if wants_grams else None


def _layer_scores(
    model: nn.Module,
    config: MinitronConfig,
    memo: Measurements,
    search_blocks: torch.Tensor,
    reporter: Reporter,
) -> Importance:
    """The measured importance, its ``layers`` by ``config.layer_metric``."""
    assert memo.importance is not None
    if config.layer_metric != "perplexity" or "depth" not in config.axes:
        return memo.importance
    if memo.layer_removal is None:
        memo.layer_removal = layer_removal_scores(model, search_blocks, reporter=reporter)
    else:
        memo.reused.append("layer_removal")
    # A copy: the cached Block Importance scores stay for prunings that rank by them.
    return dataclasses.replace(memo.importance, layers=memo.layer_removal)


def _wants_grams(config: MinitronConfig, arch: Arch, tokens: int, reporter: Reporter) -> bool:
    """Whether the refit applies (see :func:`measure_model`; a warning event when it is asked
    for but cannot be done)."""
    if not config.refit or "mlp" not in config.axes or arch.experts:
        return False
    floor = REFIT_TOKENS_PER_NEURON * arch.intermediate
    gram_bytes = arch.layers * arch.intermediate**2 * 8  # float64, one per block
    if tokens < floor:
        reporter.event(
            f"refit skipped: {tokens:,} calibration tokens measure the MLPs, fewer than "
            f"{REFIT_TOKENS_PER_NEURON} per neuron ({floor:,}); with so few the least squares "
            "fit the text, not the model (give more calibration tokens)",
            level="warning",
            data={"tokens": tokens, "intermediate": arch.intermediate},
        )
        return False
    if gram_bytes > config.refit_max_gib * 2**30:
        reporter.event(
            f"refit skipped: its input Grams would take {gram_bytes / 2**30:.1f} GiB, "
            f"over refit_max_gib = {config.refit_max_gib:g}",
            level="warning",
            data={"gram_bytes": gram_bytes, "refit_max_gib": config.refit_max_gib},
        )
        return False
    return True
