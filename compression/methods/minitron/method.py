"""``minitron``: structured pruning to a standard, smaller architecture (arXiv 2407.14679).

measure importance (one pass) → enumerate homogeneous shapes within 1 % of the target →
evaluate the most promising few on held-out calibration text → prune the model to the best.
The maths lives in ``compression/pruning/``; this module owns the search and the reporting.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimforge.compression.evaluation import perplexity
from slimforge.compression.lowrank import count_parameters
from slimforge.compression.methods.method import Method, MethodResult
from slimforge.compression.methods.minitron.config import MinitronConfig
from slimforge.compression.methods.minitron.measure import (
    REFIT_TOKENS_PER_NEURON,
    Measurements,
    measure_model,
)
from slimforge.compression.planning import RankPlan
from slimforge.compression.progress import Reporter
from slimforge.compression.pruning.arch import Arch, Candidate
from slimforge.compression.pruning.importance import Importance
from slimforge.compression.pruning.layout import arch_of
from slimforge.compression.pruning.local_distill import (
    capture_mlp_io,
    distill_mlps_locally,
    mlp_io_bytes,
)
from slimforge.compression.pruning.prune import choose_layers, prune_model, top_indices
from slimforge.compression.pruning.refit import apply_refit, refit_down_weights
from slimforge.compression.pruning.search import search_space
from slimforge.compression.pruning.sequential_refit import sequential_refit

__all__ = ["REFIT_TOKENS_PER_NEURON", "MinitronMethod", "pick_candidates", "removed_importance"]


def removed_importance(arch: Arch, shape: Arch, importance: Importance) -> float:
    """How much measured importance a shape throws away: the removed share of each axis's
    total score (hidden channels; per-layer (and per-expert) MLP neurons, heads and experts,
    averaged; layers), summed. A cheap proxy used to pick which candidates to evaluate."""

    def share(scores: torch.Tensor, keep: int) -> float:
        total = float(scores.sum())
        return 0.0 if total <= 0 else 1.0 - float(scores[top_indices(scores, keep)].sum()) / total

    hd = share(importance.hidden, shape.hidden)
    rows = importance.neurons.reshape(-1, importance.neurons.shape[-1])
    mlp = sum(share(r, shape.intermediate) for r in rows) / rows.shape[0]
    g, k = arch.kv_heads, shape.heads // shape.kv_heads
    heads = sum(share(grp, k) for row in importance.heads for grp in row.view(g, -1)) / (
        arch.layers * g
    )
    depth = share(importance.layers.clamp_min(0), shape.layers)
    experts = 0.0
    if importance.experts is not None:
        experts = sum(share(r, shape.experts) for r in importance.experts) / arch.layers
    return hd + mlp + heads + depth + experts


def _family(arch: Arch, shape: Arch) -> tuple[bool, ...]:
    """Which axes a shape changes (depth, heads, mlp, hidden, experts)."""
    return (
        shape.layers != arch.layers,
        shape.heads != arch.heads,
        shape.intermediate != arch.intermediate,
        shape.hidden != arch.hidden,
        shape.experts != arch.experts,
    )


def pick_candidates(
    arch: Arch, candidates: list[Candidate], importance: Importance, limit: int
) -> list[Candidate]:
    """The ``limit`` candidates worth evaluating: the least-damaging (by removed importance) of
    each family of axes first, then the next of each, and so on.

    Importance shares of different axes are not comparable (a middle layer's Block Importance is
    tiny next to a hidden channel's share), so a plain sort would fill the list with one family;
    measured on SmolLM2 at -20 %, that skipped every width-only shape while width-only was the
    best by far. Round-robin over families lets the perplexity search decide between them.
    """
    families: dict[tuple[bool, ...], list[Candidate]] = {}
    for cand in sorted(candidates, key=lambda c: removed_importance(arch, c.arch, importance)):
        families.setdefault(_family(arch, cand.arch), []).append(cand)
    queues = sorted(
        families.values(), key=lambda q: removed_importance(arch, q[0].arch, importance)
    )
    picked: list[Candidate] = []
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


class MinitronMethod(Method[MinitronConfig]):
    """Width and depth pruning by activation importance, with a perplexity-ranked shape search."""

    @staticmethod
    def _local_io(
        model: nn.Module,
        config: MinitronConfig,
        arch: Arch,
        shape: Arch,
        layers: list[int],
        measure: torch.Tensor,
        reporter: Reporter,
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]] | None:
        """The original MLPs' inputs and outputs the local distillation trains on, or None
        when it is off or does not apply: dense models whose MLP narrows and whose hidden size
        is kept (it does not need the refit, nor its tokens-per-neuron floor); warns and skips
        when the stored activations would exceed ``refit_max_gib``."""
        narrowed = shape.intermediate < arch.intermediate and shape.hidden == arch.hidden
        if config.local_distill_epochs == 0 or not narrowed or arch.experts:
            return None
        need = mlp_io_bytes(arch.hidden, len(layers), int(measure.numel()))
        if need > config.refit_max_gib * 2**30:
            reporter.event(
                f"local distillation skipped: its stored activations would take "
                f"{need / 2**30:.1f} GiB, over refit_max_gib = {config.refit_max_gib:g}",
                level="warning",
                data={"bytes": need, "refit_max_gib": config.refit_max_gib},
            )
            return None
        return capture_mlp_io(model, measure, layers, batch_size=config.batch_size)

    def _search(
        self, model: nn.Module, config: MinitronConfig, target_params: int
    ) -> tuple[Arch, int, list[Candidate]]:
        """The model's shape, its count, and the candidates (raises before any work)."""
        arch = arch_of(model)
        total = count_parameters(model)
        if arch.params() != total:
            raise ValueError(
                f"minitron cannot account for all of {type(model).__name__}'s parameters "
                f"({arch.params():,} modelled, {total:,} present)"
            )
        return arch, total, search_space(arch, config, target_params=target_params)

    def _plan(self, model: nn.Module, config: MinitronConfig, target_params: int) -> RankPlan:
        """Check from shapes alone that some candidate lands on the target (no data needed)."""
        _, total, candidates = self._search(model, config, target_params)
        best = candidates[0]
        return RankPlan(
            ranks={}, params_before=total, params_after=best.params, target_params=target_params
        )

    def _compress(
        self,
        model: nn.Module,
        config: MinitronConfig,
        *,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter,
        workdir: Path | None,
        device: torch.device | None,
    ) -> MethodResult:
        """:meth:`prune`. Fast enough (forward passes, plus the short local distillation when
        asked) that it keeps no checkpoints (``workdir`` unused)."""
        return self.prune(model, config, blocks=blocks, target_params=target_params,
                          reporter=reporter)  # fmt: skip

    def prune(
        self,
        model: nn.Module,
        config: MinitronConfig,
        *,
        blocks: torch.Tensor,
        target_params: int,
        reporter: Reporter,
        measurements: Measurements | None = None,
    ) -> MethodResult:
        """Prune ``model`` in place to the best candidate shape near ``target_params``.

        ``blocks`` [n, t]: the first measure importance (and the refit's Grams), the last
        ``config.search_tokens`` rank the candidate shapes. ``measurements``: what an earlier
        pruning of a copy of the same unpruned model on the same ``blocks`` measured, reused
        (and filled in); RuntimeError when it was taken on other blocks. Needs memory for one
        pruned copy at a time while candidates are scored. Raises UnreachableTargetError (no
        shape near the target) and ValueError (an architecture minitron cannot model) before
        any work.
        """
        arch, total, candidates = self._search(model, config, target_params)  # fails early
        n = blocks.shape[0]
        held = min(max(1, config.search_tokens // blocks.shape[1]), max(1, n // 4))
        if n < 2:
            raise ValueError("minitron needs at least 2 calibration blocks (measure + search)")
        measure, search = blocks[: n - held], blocks[n - held :]
        t0 = time.monotonic()
        importance, grams = measure_model(
            model, config, arch, measure, search, reporter, cache=measurements
        )
        measure_seconds = time.monotonic() - t0
        cut = _Cutter(model, config, importance, grams, measure, reporter)
        chosen = pick_candidates(arch, candidates, importance, config.max_candidates)
        scored, (cand, layers) = self._score_shapes(model, arch, chosen, cut, search, reporter)
        io = self._local_io(model, config, arch, cand.arch, layers, measure, reporter)
        cut.prune(model, cand.arch, layers, final=True)
        local = None
        if io is not None:
            local = distill_mlps_locally(model, io, layers, epochs=config.local_distill_epochs,
                                         lr=config.local_distill_lr, reporter=reporter)  # fmt: skip
            del io
        reporter.event("pruned", data={**cand.describe(), "kept_layers": layers})
        return MethodResult(
            ranks={},
            params_before=total,
            params_after=count_parameters(model),
            tokens_used=int(blocks.numel()),
            details={
                "shape": cand.describe(),
                "kept_layers": layers,
                "candidates": scored,
                "candidates_found": len(candidates),
                "refit": grams is not None,
                "refit_sequential": cut.original is not None,
                "local_distill": None if local is None else vars(local),
                "measure_seconds": round(measure_seconds, 3),
            },
        )

    @staticmethod
    def _score_shapes(
        model: nn.Module,
        arch: Arch,
        chosen: list[Candidate],
        cut: _Cutter,
        search: torch.Tensor,
        reporter: Reporter,
    ) -> tuple[list[dict[str, Any]], tuple[Candidate, list[int]]]:
        """Each chosen shape cut from a copy of ``model`` and scored by perplexity on
        ``search`` [m, t]: the rows, and the best shape with its kept layers."""
        scored: list[dict[str, Any]] = []
        best: tuple[float, Candidate, list[int]] | None = None
        for i, cand in enumerate(chosen):
            reporter.check_cancelled()
            layers = choose_layers(
                cut.importance.layers, cand.arch.layers, contiguous=cut.config.contiguous_layers
            )
            trial = copy.deepcopy(model)
            cut.prune(trial, cand.arch, layers, final=False)
            ppl = perplexity(trial, search)
            del trial
            removed = removed_importance(arch, cand.arch, cut.importance)
            row = {**cand.describe(), "perplexity": ppl, "removed_importance": round(removed, 6)}
            scored.append(row)
            reporter.event("candidate scored", data={"index": i + 1, "total": len(chosen), **row})
            if best is None or ppl < best[0]:
                best = (ppl, cand, layers)
        assert best is not None
        return scored, best[1:]


class _Cutter:
    """Cuts a copy of the unpruned ``model`` (or the model itself, last) to a shape: prune,
    then the refit of the narrowed down projections from the original's Grams; the final cut
    also gets the sequential refit when ``config.refit_sequential``."""

    def __init__(
        self,
        model: nn.Module,
        config: MinitronConfig,
        importance: Importance,
        grams: dict[str, torch.Tensor] | None,
        measure: torch.Tensor,
        reporter: Reporter,
    ) -> None:
        self.model, self.config, self.importance, self.grams = model, config, importance, grams
        self.measure, self.reporter = measure, reporter
        # The sequential refit compares with the unpruned model, which the final cut edits.
        sequential = grams is not None and config.refit_sequential
        self.original = copy.deepcopy(model) if sequential else None

    def prune(self, target: nn.Module, shape: Arch, layers: list[int], final: bool) -> None:
        c = self.config
        refits = (
            {}
            if self.grams is None
            else refit_down_weights(
                self.model, self.grams, self.importance, shape, layers, ridge=c.refit_ridge
            )
        )
        prune_model(target, shape, self.importance, layers=layers)
        apply_refit(target, refits, layers)
        # Candidates are ranked with the plain refit (cheaper); the chosen one gets both.
        if final and self.original is not None and refits:
            sequential_refit(self.original, target, self.measure, layers, ridge=c.refit_ridge,
                             batch_size=c.batch_size, reporter=self.reporter)  # fmt: skip
