"""The ``energy`` rank allocation: greedy spectral energy per parameter, against brute force."""

from __future__ import annotations

import itertools

import pytest

from slimforge.compression.configs import LillamaConfig, SvdConfig
from slimforge.compression.planning import (
    LinearShape,
    UnreachableTargetError,
    block_index,
    plan_uniform,
    resolve_target,
)
from slimforge.compression.planning_energy import plan_by_energy
from tests.compression.test_planning import SMOL_TOTAL, independent_count, smol_shapes


def _decaying(n: int, rate: float) -> list[float]:
    return [rate**i for i in range(n)]


def _kept(spectrum: list[float], rank: int | None) -> float:
    energy = [v * v for v in spectrum]
    return 1.0 if rank is None else sum(energy[:rank]) / sum(energy)


@pytest.mark.parametrize("ratio", [0.6, 0.8, 0.9])
def test_energy_plan_lands_within_one_percent_on_smollm2(ratio: float) -> None:
    shapes = smol_shapes()
    # Deeper layers get flatter spectra: they should receive more rank.
    spectra = {
        s.name: _decaying(min(s.in_features, s.out_features), 0.9 + 0.003 * _layer(s))
        for s in shapes
    }
    target = resolve_target(SMOL_TOTAL, ratio=ratio)
    plan = plan_by_energy(shapes, spectra, total_params=SMOL_TOTAL, target_params=target)
    assert plan.params_after <= target
    assert abs(plan.params_after - target) <= 0.01 * target
    assert plan.params_after == independent_count(shapes, plan.ranks, SMOL_TOTAL)
    assert all(r % 8 == 0 and r >= 8 for r in plan.ranks.values())


def _layer(s: LinearShape) -> int:
    idx = block_index(s.name)
    assert idx is not None
    return idx


def test_energy_plan_is_optimal_on_a_small_case() -> None:
    """Brute force over every rank combination of three matrices: the greedy keeps at least
    the energy of the best plan one step (the largest step's parameters) smaller, and no plan
    of its size keeps much more (greedy on concave gains: optimal up to one step)."""
    shapes = [
        LinearShape("model.layers.0.a", 32, 32, False),
        LinearShape("model.layers.0.b", 32, 48, False),
        LinearShape("model.layers.1.c", 48, 32, False),
    ]
    spectra = {
        "model.layers.0.a": _decaying(32, 0.7),
        "model.layers.0.b": _decaying(32, 0.95),
        "model.layers.1.c": _decaying(32, 0.85),
    }
    total = sum(s.in_features * s.out_features for s in shapes) + 1000
    target = total - 1500
    plan = plan_by_energy(
        shapes, spectra, total_params=total, target_params=target, tolerance=0.05, rank_multiple=4
    )

    def options(s: LinearShape) -> list[int | None]:
        ranks: list[int | None] = [
            r for r in range(4, 33, 4) if r * (s.in_features + s.out_features) < 32 * 48
        ]
        return [*ranks, None]

    def size(combo: tuple[int | None, ...]) -> int:
        out = total
        for s, r in zip(shapes, combo, strict=True):
            if r is not None:
                out -= s.in_features * s.out_features - r * (s.in_features + s.out_features)
        return out

    def value(combo: tuple[int | None, ...]) -> float:
        return sum(_kept(spectra[s.name], r) for s, r in zip(shapes, combo, strict=True))

    chosen = tuple(plan.ranks.get(s.name) for s in shapes)
    assert size(chosen) == plan.params_after <= target
    combos = list(itertools.product(*map(options, shapes)))
    step = 4 * max(s.in_features + s.out_features for s in shapes)
    smaller = max(value(c) for c in combos if size(c) <= plan.params_after - step)
    same = max(value(c) for c in combos if size(c) <= plan.params_after)
    assert smaller <= value(chosen) + 1e-12
    assert value(chosen) >= same - 0.15
    uniform = plan_uniform(
        shapes, total_params=total, target_params=target, tolerance=0.05, rank_multiple=4
    )
    assert value(chosen) > value(tuple(uniform.ranks.get(s.name) for s in shapes))


def test_energy_plan_refuses_unreachable_targets_and_missing_spectra() -> None:
    shapes = smol_shapes()
    spectra = {s.name: _decaying(64, 0.9) for s in shapes}
    with pytest.raises(UnreachableTargetError, match="reachable range"):
        plan_by_energy(shapes, spectra, total_params=SMOL_TOTAL, target_params=1000)
    with pytest.raises(ValueError, match="no spectrum"):
        plan_by_energy(
            shapes,
            {},
            total_params=SMOL_TOTAL,
            target_params=resolve_target(SMOL_TOTAL, ratio=0.8),
        )


@pytest.mark.parametrize(
    "config", [SvdConfig(allocation="energy"), LillamaConfig(rank_strategy="energy")]
)
def test_configs_fall_back_to_the_uniform_estimate_without_spectra(
    config: SvdConfig | LillamaConfig,
) -> None:
    shapes = smol_shapes()
    target = resolve_target(SMOL_TOTAL, ratio=0.8)
    estimate = config.plan(shapes, total_params=SMOL_TOTAL, target_params=target)
    uniform = plan_uniform(shapes, total_params=SMOL_TOTAL, target_params=target)
    assert estimate.ranks == uniform.ranks
    spectra = {s.name: _decaying(64, 0.9) for s in shapes}
    measured = config.plan(shapes, total_params=SMOL_TOTAL, target_params=target, spectra=spectra)
    assert measured.ranks != uniform.ranks
