"""The ``energy`` rank allocation: measured singular values decide where rank goes.

Pure Python like :mod:`slimforge.compression.planning`, whose counting rules it shares.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from slimforge.compression.planning import (
    LinearShape,
    RankPlan,
    _dense_weight,
    _min_rank,
    _saving,
    checked_target,
)

__all__ = ["plan_by_energy"]


def plan_by_energy(
    linears: Sequence[LinearShape],
    spectra: Mapping[str, Sequence[float]],
    *,
    total_params: int,
    target_params: int,
    min_rank: int = 8,
    rank_multiple: int = 8,
    tolerance: float = 0.01,
    method: str = "svd",
) -> RankPlan:
    """Ranks that keep the most spectral energy per parameter (our sensitivity allocation).

    ``spectra[name]`` holds the singular values, largest first, of the matrix the factors
    approximate: W·S with activation whitening (so σᵢ² is the output error on the calibration
    data that dropping direction i costs) or W itself. A matrix at rank r keeps the share
    Σ_{i<r} σᵢ² / Σ σᵢ² of its energy: 1 minus its relative output error.

    Every candidate starts at the thinnest rank; then, greedily, the step (``rank_multiple``
    more rank, or back to dense once the next step would pass break-even) that keeps the most
    energy share per added parameter is taken while the count stays at or below the target.
    Shares are concave in r (singular values are sorted), so the greedy is optimal up to about
    one step: matrices whose spectrum decays fast get thin, flat ones stay wide.
    Raises :class:`UnreachableTargetError` like :func:`plan_uniform`.
    """
    unreachable = checked_target(
        linears,
        total_params=total_params,
        target_params=target_params,
        min_rank=min_rank,
        rank_multiple=rank_multiple,
        method=method,
    )
    r_min = _min_rank(min_rank, rank_multiple)
    cands = [s for s in linears if _saving(s, r_min) > 0]
    missing = [s.name for s in cands if s.name not in spectra]
    if missing:
        raise ValueError(f"no spectrum for {', '.join(missing[:5])}")

    # Cumulative normalised energy: share[name][r] = kept share at rank r.
    shares: dict[str, list[float]] = {}
    for s in cands:
        energy = [float(v) ** 2 for v in spectra[s.name]]
        total = sum(energy) or 1.0
        acc, cum = 0.0, [0.0]
        for e in energy:
            acc += e
            cum.append(acc / total)
        shares[s.name] = cum

    def kept(s: LinearShape, rank: int | None) -> float:
        cum = shares[s.name]
        if rank is None:  # dense
            return cum[-1]
        return cum[min(rank, len(cum) - 1)]

    def cost(s: LinearShape, rank: int | None) -> int:
        return _dense_weight(s) if rank is None else rank * (s.in_features + s.out_features)

    def next_step(s: LinearShape, rank: int) -> int | None:
        # None: the next step makes the matrix dense (no saving left at rank + multiple).
        up = rank + rank_multiple
        return up if _saving(s, up) > 0 else None

    ranks: dict[str, int | None] = {s.name: r_min for s in cands}
    count = total_params - sum(_saving(s, r_min) for s in cands)  # every candidate at r_min
    heap: list[tuple[float, int, str]] = []  # (-gain per parameter, order, name)
    by_name = {s.name: s for s in cands}

    def push(s: LinearShape, order: int) -> None:
        rank = ranks[s.name]
        if rank is None:
            return
        up = next_step(s, rank)
        added = cost(s, up) - cost(s, rank)
        if added > 0:
            gain = kept(s, up) - kept(s, rank)
            heapq.heappush(heap, (-gain / added, order, s.name))

    for order, s in enumerate(cands):
        push(s, order)
    while heap:
        _, order, name = heapq.heappop(heap)
        s = by_name[name]
        rank = ranks[name]
        assert rank is not None
        up = next_step(s, rank)
        added = cost(s, up) - cost(s, rank)
        if count + added > target_params:
            continue  # this matrix's next step does not fit; others' smaller ones may
        ranks[name] = up
        count += added
        push(s, order)

    if abs(count - target_params) > tolerance * target_params:
        raise unreachable(count)
    kept_ranks = {n: r for n, r in ranks.items() if r is not None}
    return RankPlan(
        ranks=kept_ranks,
        params_before=total_params,
        params_after=count,
        target_params=target_params,
    )
