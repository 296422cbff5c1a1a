"""Turn a whole-model parameter target into per-module ranks (pure Python, no torch).

Counts are unique parameters of the whole model: tied weights once, embeddings included. A Linear
W (out x in) factorised at rank r costs r·(in + out) (+ out for the bias, unchanged), so it is only
worth factorising while r·(in + out) < in·out, i.e. below its break-even rank in·out / (in + out).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "LinearShape",
    "RankPlan",
    "UnreachableTargetError",
    "block_index",
    "lowrank_param_count",
    "plan_layerwise",
    "plan_uniform",
    "reachable_range",
    "resolve_target",
]


@dataclass(frozen=True)
class LinearShape:
    """A factorisable matrix: full module name and its dense shape."""

    name: str
    in_features: int
    out_features: int
    bias: bool


@dataclass(frozen=True)
class RankPlan:
    """Ranks of the modules to factorise (others stay dense) and the resulting counts."""

    ranks: dict[str, int]
    params_before: int
    params_after: int
    target_params: int


class UnreachableTargetError(ValueError):
    """The target parameter count cannot be reached within tolerance by this method."""

    def __init__(
        self,
        *,
        target_params: int,
        min_params: int,
        max_params: int,
        total_params: int,
        method: str = "svd",
        closest_params: int | None = None,
        hint: str = "use a smaller rank_multiple for finer steps",
        reason: str | None = None,
    ) -> None:
        self.target_params = target_params
        self.min_params = min_params
        self.max_params = max_params
        self.total_params = total_params
        self.method = method
        self.closest_params = closest_params
        lo_pct = 100.0 * min_params / total_params
        hi_pct = 100.0 * max_params / total_params
        message = (
            f"target of {target_params:,} parameters is not reachable with method {method}: "
            f"reachable range is {min_params:,}–{max_params:,} "  # noqa: RUF001
            f"({lo_pct:.1f}%–{hi_pct:.1f}% of the model's {total_params:,})"  # noqa: RUF001
        )
        if closest_params is not None:
            # Inside the range but between two achievable counts (coarse rank steps).
            message += f"; the closest achievable count is {closest_params:,} ({hint})"
        if reason is not None:  # why the range is what it is (a constraint of the job)
            message += f"; {reason}"
        super().__init__(message)


def resolve_target(
    total_params: int, *, params: int | None = None, ratio: float | None = None
) -> int:
    """Target count from exactly one of ``params`` (absolute) or ``ratio`` (0 < r <= 1)."""
    if (params is None) == (ratio is None):
        raise ValueError("give exactly one of params or ratio as the target")
    if total_params <= 0:
        raise ValueError(f"total_params must be positive, got {total_params}")
    if ratio is not None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        return round(total_params * ratio)
    assert params is not None
    if params <= 0:
        raise ValueError(f"params must be positive, got {params}")
    return int(params)


def lowrank_param_count(shape: LinearShape, rank: int) -> int:
    """Parameters of ``shape`` factorised at ``rank``: r·(in + out), plus the bias if any."""
    return rank * (shape.in_features + shape.out_features) + (
        shape.out_features if shape.bias else 0
    )


def _dense_weight(shape: LinearShape) -> int:
    return shape.in_features * shape.out_features


def _saving(shape: LinearShape, rank: int) -> int:
    """Parameters saved by factorising at ``rank``; 0 when the rank does not save (stays dense)."""
    lowrank = rank * (shape.in_features + shape.out_features)
    return max(0, _dense_weight(shape) - lowrank)


def _min_rank(min_rank: int, rank_multiple: int) -> int:
    # The thinnest factor: at least min_rank and a multiple of rank_multiple.
    return max(rank_multiple, math.ceil(min_rank / rank_multiple) * rank_multiple)


def reachable_range(
    linears: Sequence[LinearShape], *, total_params: int, min_rank: int, rank_multiple: int
) -> tuple[int, int]:
    """(fewest, most) parameters any plan can give: every candidate at the minimum rank, or none."""
    r_min = _min_rank(min_rank, rank_multiple)
    return total_params - sum(_saving(s, r_min) for s in linears), total_params


def checked_target(
    linears: Sequence[LinearShape],
    *,
    total_params: int,
    target_params: int,
    min_rank: int,
    rank_multiple: int,
    method: str,
) -> Callable[[int | None], UnreachableTargetError]:
    """Check the rank settings, and the target against the reachable range (raising
    :class:`UnreachableTargetError`); returns a factory of that error, with the closest
    achievable count, for a planner that fails to land later."""
    if rank_multiple < 1 or min_rank < 1:
        raise ValueError("min_rank and rank_multiple must be at least 1")
    lo_count, hi_count = reachable_range(
        linears, total_params=total_params, min_rank=min_rank, rank_multiple=rank_multiple
    )

    def unreachable(closest: int | None = None) -> UnreachableTargetError:
        return UnreachableTargetError(
            target_params=target_params,
            min_params=lo_count,
            max_params=hi_count,
            total_params=total_params,
            method=method,
            closest_params=closest,
        )

    if not lo_count <= target_params <= hi_count or target_params <= 0:
        raise unreachable()
    return unreachable


def _floor_ranks(
    linears: Sequence[LinearShape], fraction: float, r_min: int, multiple: int
) -> dict[str, int]:
    """Every matrix at ``fraction`` of its break-even rank, rounded down to the multiple."""
    ranks: dict[str, int] = {}
    for s in linears:
        breakeven = _dense_weight(s) / (s.in_features + s.out_features)
        ranks[s.name] = max(r_min, int(fraction * breakeven // multiple) * multiple)
    return ranks


def _count(linears: Sequence[LinearShape], ranks: dict[str, int], total_params: int) -> int:
    return total_params - sum(_saving(s, ranks[s.name]) for s in linears)


def _count_at(
    shapes: dict[tuple[int, int], int], fraction: float, r_min: int, multiple: int, total: int
) -> int:
    """``_count`` of ``_floor_ranks(fraction)``, once per distinct (in, out) shape times its
    number of matrices: the same figure, but a bisection step costs a handful of shapes instead
    of every matrix (210 in SmolLM2; the API plans at submit time)."""
    saved = 0
    for (fan_in, fan_out), n in shapes.items():
        breakeven = fan_in * fan_out / (fan_in + fan_out)
        rank = max(r_min, int(fraction * breakeven // multiple) * multiple)
        saved += n * max(0, fan_in * fan_out - rank * (fan_in + fan_out))
    return total - saved


def plan_uniform(
    linears: Sequence[LinearShape],
    *,
    total_params: int,
    target_params: int,
    min_rank: int = 8,
    rank_multiple: int = 8,
    tolerance: float = 0.01,
    method: str = "svd",
) -> RankPlan:
    """Ranks that keep the same fraction f of every matrix's break-even rank.

    f is found by bisection (the count is monotone in f) as the largest fraction whose ranks,
    rounded down to ``rank_multiple``, stay at or below the target. Then, largest remainder
    first, single matrices are rounded up instead of down while that brings the count closer to
    the target, so ranks of equal-shaped matrices differ by at most one step. A matrix whose rank
    reaches its break-even stays dense. Raises :class:`UnreachableTargetError` when the closest
    plan is further than ``tolerance`` (relative) from the target.
    """
    if rank_multiple < 1 or min_rank < 1:
        raise ValueError("min_rank and rank_multiple must be at least 1")
    lo_count, hi_count = reachable_range(
        linears, total_params=total_params, min_rank=min_rank, rank_multiple=rank_multiple
    )
    if target_params > total_params or target_params <= 0:
        raise UnreachableTargetError(
            target_params=target_params,
            min_params=lo_count,
            max_params=hi_count,
            total_params=total_params,
            method=method,
        )
    r_min = _min_rank(min_rank, rank_multiple)
    # Only matrices that save parameters even at the thinnest rank are candidates.
    cands = [s for s in linears if _saving(s, r_min) > 0]

    shapes = Counter((s.in_features, s.out_features) for s in cands)

    def count_at(fraction: float) -> int:
        return _count_at(shapes, fraction, r_min, rank_multiple, total_params)

    lo, hi = 0.0, 1.0
    if count_at(hi) <= target_params:
        lo = hi
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            if count_at(mid) <= target_params:
                lo = mid
            else:
                hi = mid
    floor = _floor_ranks(cands, lo, r_min, rank_multiple)
    ranks = dict(floor)
    count = _count(cands, ranks, total_params)

    def bump_cost(s: LinearShape) -> int:
        # Parameters added by rounding this matrix up one step (possibly back to dense).
        r = ranks[s.name]
        return _saving(s, r) - _saving(s, r + rank_multiple)

    def remainder(s: LinearShape) -> float:
        breakeven = _dense_weight(s) / (s.in_features + s.out_features)
        return (lo * breakeven / rank_multiple) % 1.0

    # Largest remainder first; stable on ties so equal shapes are treated in module order.
    pending = [s for s in sorted(cands, key=remainder, reverse=True) if _saving(s, ranks[s.name])]
    for s in pending:
        cost = bump_cost(s)
        if cost > 0 and count + cost <= target_params:
            ranks[s.name] += rank_multiple
            count += cost
    # One step over the target may still be closer than the count just below it.
    # Only matrices still rounded down, so no rank moves more than one step from f·break-even.
    over = [
        (abs(count + bump_cost(s) - target_params), s)
        for s in cands
        if ranks[s.name] == floor[s.name] and _saving(s, ranks[s.name]) and bump_cost(s) > 0
    ]
    if over:
        dist, s = min(over, key=lambda t: t[0])
        if dist < abs(count - target_params):
            count += bump_cost(s)
            ranks[s.name] += rank_multiple

    if abs(count - target_params) > tolerance * target_params:
        inside = lo_count <= target_params <= hi_count
        raise UnreachableTargetError(
            target_params=target_params,
            min_params=lo_count,
            max_params=hi_count,
            total_params=total_params,
            closest_params=count if inside else None,
            method=method,
        )
    kept = {s.name: ranks[s.name] for s in cands if _saving(s, ranks[s.name]) > 0}
    return RankPlan(
        ranks=kept, params_before=total_params, params_after=count, target_params=target_params
    )


def block_index(name: str) -> int | None:
    """The decoder block of a module: its first numeric path component
    (``model.layers.3.mlp.experts.5.w1`` -> 3), None outside any block."""
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return None


def plan_layerwise(
    linears: Sequence[LinearShape],
    *,
    total_params: int,
    target_params: int,
    order: str = "bottom",
    min_rank: int = 8,
    rank_multiple: int = 8,
    tolerance: float = 0.01,
    method: str = "lillama",
    layer_fraction: float | None = None,
    layer_ranks: dict[str, int] | None = None,
) -> RankPlan:
    """Lillama's greedy bottom-first (or top-first) allocation.

    With ``layer_fraction`` the taken blocks keep that fraction of every matrix's break-even
    rank instead of the thinnest rank (on a small model the thinnest rank destroys a layer);
    if even every block at that fraction stays above the target, the thinnest rank is used.

    Blocks are taken from block 0 upward (``order="bottom"``) or from the last block down
    (``"top"``); every targeted matrix of a taken block is factorised at the thinnest rank
    (``min_rank`` rounded up to ``rank_multiple``), which saves the most, until the next block
    would pass the target. That boundary block is then planned with :func:`plan_uniform` on the
    remaining budget, so its ranks rise in ``rank_multiple`` steps until the whole model lands
    within ``tolerance`` of the target. If the boundary block alone is too coarse to land there,
    the previous taken blocks join it (still only blocks up to the boundary are touched). Only
    blocks 0..K (bottom) or K..last (top) are factorised. Raises
    :class:`UnreachableTargetError` with the reachable range otherwise.
    """
    if order not in ("bottom", "top"):
        raise ValueError(f"order must be 'bottom' or 'top', got {order!r}")
    if layer_fraction is not None:
        if not 0.0 < layer_fraction < 1.0:
            raise ValueError(f"layer_fraction must be in (0, 1), got {layer_fraction}")
        try:
            return plan_layerwise(
                linears,
                total_params=total_params,
                target_params=target_params,
                order=order,
                min_rank=min_rank,
                rank_multiple=rank_multiple,
                tolerance=tolerance,
                method=method,
                layer_ranks=_floor_ranks(
                    linears, layer_fraction, _min_rank(min_rank, rank_multiple), rank_multiple
                ),
            )
        except UnreachableTargetError:
            pass  # every block at the fraction is not enough: fall back to the thinnest rank
    unreachable = checked_target(
        linears,
        total_params=total_params,
        target_params=target_params,
        min_rank=min_rank,
        rank_multiple=rank_multiple,
        method=method,
    )
    r_min = _min_rank(min_rank, rank_multiple)

    def taken_rank(s: LinearShape) -> int:
        # Rank of a matrix in a fully taken block: the thinnest, or the caller's choice.
        return r_min if layer_ranks is None else layer_ranks[s.name]

    by_block: dict[int, list[LinearShape]] = {}
    for s in linears:
        idx = block_index(s.name)
        if idx is not None and _saving(s, taken_rank(s)) > 0:
            by_block.setdefault(idx, []).append(s)
    blocks = sorted(by_block, reverse=(order == "top"))
    ranks: dict[str, int] = {}
    count = total_params
    if abs(count - target_params) <= tolerance * target_params:
        return RankPlan(
            ranks={}, params_before=total_params, params_after=count, target_params=target_params
        )
    for pos, idx in enumerate(blocks):
        block_saving = sum(_saving(s, taken_rank(s)) for s in by_block[idx])
        if count - block_saving > target_params:
            # The whole block at the taken rank still leaves the count above the target.
            for s in by_block[idx]:
                ranks[s.name] = taken_rank(s)
            count -= block_saving
            continue
        # The boundary block: land on the target by raising its ranks (joined by earlier
        # blocks, re-planned together, if its own steps are too coarse).
        closest: int | None = None
        for back in range(0, pos + 1):
            group = [s for j in blocks[pos - back : pos + 1] for s in by_block[j]]
            before = count + sum(_saving(s, ranks[s.name]) for s in group if s.name in ranks)
            try:
                sub = plan_uniform(
                    group,
                    total_params=before,
                    target_params=target_params,
                    min_rank=min_rank,
                    rank_multiple=rank_multiple,
                    tolerance=tolerance,
                    method=method,
                )
            except UnreachableTargetError as exc:
                closest = exc.closest_params
                continue
            for s in group:
                ranks.pop(s.name, None)
            ranks.update(sub.ranks)
            return RankPlan(
                ranks=ranks,
                params_before=total_params,
                params_after=sub.params_after,
                target_params=target_params,
            )
        raise unreachable(closest)
    raise unreachable(count)
