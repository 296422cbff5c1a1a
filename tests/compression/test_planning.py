"""Rank planning: targets, the break-even rule, uniform plans within 1 %, unreachable targets."""

from __future__ import annotations

import pytest

from slimforge.compression.planning import (
    LinearShape,
    UnreachableTargetError,
    lowrank_param_count,
    plan_uniform,
    reachable_range,
    resolve_target,
)

SMOL_TOTAL = 134_515_008


def smol_shapes() -> list[LinearShape]:
    """SmolLM2-135M: 30 layers, hidden 576, 9 heads / 3 KV heads of 64, MLP 1536."""
    shapes = []
    for i in range(30):
        p = f"model.layers.{i}."
        shapes += [
            LinearShape(p + "self_attn.q_proj", 576, 576, False),
            LinearShape(p + "self_attn.k_proj", 576, 192, False),
            LinearShape(p + "self_attn.v_proj", 576, 192, False),
            LinearShape(p + "self_attn.o_proj", 576, 576, False),
            LinearShape(p + "mlp.gate_proj", 576, 1536, False),
            LinearShape(p + "mlp.up_proj", 576, 1536, False),
            LinearShape(p + "mlp.down_proj", 1536, 576, False),
        ]
    return shapes


def test_smol_shapes_match_the_real_model_count() -> None:
    # Linears + embeddings (49152 x 576, tied) + 61 RMSNorm weights of 576 = the model's count.
    linear = sum(s.in_features * s.out_features for s in smol_shapes())
    assert linear + 49152 * 576 + 61 * 576 == SMOL_TOTAL


def tiny_shapes(layers: int = 2, bias: bool = False) -> list[LinearShape]:
    shapes = []
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            LinearShape(p + "self_attn.q_proj", 64, 64, bias),
            LinearShape(p + "self_attn.k_proj", 64, 32, bias),
            LinearShape(p + "self_attn.v_proj", 64, 32, bias),
            LinearShape(p + "self_attn.o_proj", 64, 64, False),
            LinearShape(p + "mlp.gate_proj", 64, 128, False),
            LinearShape(p + "mlp.up_proj", 64, 128, False),
            LinearShape(p + "mlp.down_proj", 128, 64, False),
        ]
    return shapes


def independent_count(shapes: list[LinearShape], ranks: dict[str, int], total: int) -> int:
    """Count after factorising, from the definition (dense weight out, factors in)."""
    by_name = {s.name: s for s in shapes}
    out = total
    for name, r in ranks.items():
        s = by_name[name]
        out -= s.in_features * s.out_features + (s.out_features if s.bias else 0)
        out += lowrank_param_count(s, r)
    return out


def test_resolve_target() -> None:
    assert resolve_target(1000, ratio=0.8) == 800
    assert resolve_target(1000, params=750) == 750
    assert resolve_target(SMOL_TOTAL, ratio=1.0) == SMOL_TOTAL
    assert resolve_target(3, ratio=0.5) == 2
    for kwargs in ({}, {"params": 5, "ratio": 0.5}, {"ratio": 0.0}, {"ratio": 1.5}, {"params": 0}):
        with pytest.raises(ValueError):
            resolve_target(1000, **kwargs)  # type: ignore[arg-type]


def test_lowrank_param_count() -> None:
    assert lowrank_param_count(LinearShape("x", 576, 1536, False), 100) == 100 * 2112
    assert lowrank_param_count(LinearShape("x", 64, 32, True), 8) == 8 * 96 + 32


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0])
def test_uniform_plan_lands_within_one_percent_on_smollm2_shapes(ratio: float) -> None:
    shapes = smol_shapes()
    target = resolve_target(SMOL_TOTAL, ratio=ratio)
    plan = plan_uniform(shapes, total_params=SMOL_TOTAL, target_params=target)
    assert abs(plan.params_after - target) <= 0.01 * target
    assert plan.params_after == independent_count(shapes, plan.ranks, SMOL_TOTAL)
    assert plan.params_before == SMOL_TOTAL and plan.target_params == target
    by_name = {s.name: s for s in shapes}
    for name, r in plan.ranks.items():
        s = by_name[name]
        assert r % 8 == 0 and r >= 8
        assert r * (s.in_features + s.out_features) < s.in_features * s.out_features
    # Uniform: matrices of one shape get the same rank up to one rounding step.
    for suffix in ("q_proj", "k_proj", "gate_proj", "down_proj"):
        group = [r for n, r in plan.ranks.items() if n.endswith(suffix)]
        if group:
            assert max(group) - min(group) <= 8


def test_uniform_plan_keeps_the_same_fraction_of_break_even() -> None:
    shapes = smol_shapes()
    plan = plan_uniform(shapes, total_params=SMOL_TOTAL, target_params=int(0.8 * SMOL_TOTAL))
    fractions = []
    for s in shapes:
        breakeven = s.in_features * s.out_features / (s.in_features + s.out_features)
        fractions.append(plan.ranks[s.name] / breakeven)
    # One common f; rounding to multiples of 8 moves a rank by < 8 (k/v: break-even 144).
    assert max(fractions) - min(fractions) < 2 * 8 / 144


@pytest.mark.parametrize("ratio", [0.75, 0.8, 0.85, 0.9])
def test_uniform_plan_on_tiny_shapes(ratio: float) -> None:
    shapes = tiny_shapes()
    total = sum(s.in_features * s.out_features for s in shapes) + 256 * 64 + 5 * 64
    target = resolve_target(total, ratio=ratio)
    plan = plan_uniform(shapes, total_params=total, target_params=target)
    assert abs(plan.params_after - target) <= 0.01 * target
    assert plan.params_after == independent_count(shapes, plan.ranks, total)


def test_break_even_rule_keeps_small_matrices_dense() -> None:
    # 16x16 has break-even rank 8: rank 8 saves nothing (8*32 == 256), so it is never a factor.
    shapes = [LinearShape("a.0.small", 16, 16, False), LinearShape("a.0.big", 256, 256, False)]
    total = 256 + 65536 + 1000
    lo, hi = reachable_range(shapes, total_params=total, min_rank=8, rank_multiple=8)
    assert (lo, hi) == (total - (65536 - 8 * 512), total)
    plan = plan_uniform(shapes, total_params=total, target_params=lo)
    assert plan.ranks == {"a.0.big": 8}
    assert plan.params_after == lo


def test_full_target_factorises_nothing() -> None:
    plan = plan_uniform(smol_shapes(), total_params=SMOL_TOTAL, target_params=SMOL_TOTAL)
    assert plan.ranks == {} and plan.params_after == SMOL_TOTAL


def test_target_below_the_range_is_unreachable_with_the_range() -> None:
    shapes = smol_shapes()
    lo, hi = reachable_range(shapes, total_params=SMOL_TOTAL, min_rank=8, rank_multiple=8)
    assert hi == SMOL_TOTAL and 0 < lo < 0.3 * SMOL_TOTAL
    target = resolve_target(SMOL_TOTAL, ratio=0.1)
    with pytest.raises(UnreachableTargetError) as info:
        plan_uniform(shapes, total_params=SMOL_TOTAL, target_params=target)
    err = info.value
    assert (err.min_params, err.max_params, err.target_params) == (lo, hi, target)
    assert isinstance(err, ValueError)
    message = str(err)
    assert message.startswith(f"target of {target:,} parameters is not reachable with method svd")
    assert f"reachable range is {lo:,}–{hi:,}" in message  # noqa: RUF001
    assert f"of the model's {SMOL_TOTAL:,}" in message and "100.0%" in message


def test_target_above_the_model_is_unreachable() -> None:
    with pytest.raises(UnreachableTargetError) as info:
        plan_uniform(smol_shapes(), total_params=SMOL_TOTAL, target_params=SMOL_TOTAL + 1)
    assert info.value.max_params == SMOL_TOTAL


def test_coarse_steps_inside_the_range_are_reported() -> None:
    # One 64x64 matrix: ranks 8..24 in steps of 8 change the count by 1024 (~10 %).
    shapes = [LinearShape("m.0.q", 64, 64, False)]
    total = 4096 + 6000
    with pytest.raises(UnreachableTargetError) as info:
        plan_uniform(shapes, total_params=total, target_params=total - 1500)
    assert info.value.closest_params is not None
    assert "closest achievable" in str(info.value)
    # A finer rank step reaches it.
    plan = plan_uniform(shapes, total_params=total, target_params=total - 1500, rank_multiple=1)
    assert abs(plan.params_after - (total - 1500)) <= 0.01 * (total - 1500)


def test_the_grouped_count_equals_the_count_over_every_matrix() -> None:
    """plan_uniform's bisection counts once per distinct shape; the figure must equal counting
    every matrix at its floor rank (the reference)."""
    import random
    from collections import Counter

    from slimforge.compression.planning import _count, _count_at, _floor_ranks

    rng = random.Random(0)
    for _ in range(200):
        linears = [
            LinearShape(
                name=f"m{i}",
                in_features=rng.choice([64, 96, 576, 1536]),
                out_features=rng.choice([64, 192, 576, 1536]),
                bias=False,
            )
            for i in range(rng.randint(1, 30))
        ]
        total = sum(s.in_features * s.out_features for s in linears) + rng.randint(0, 10_000)
        fraction, r_min, multiple = rng.random(), rng.choice([8, 16]), rng.choice([1, 8, 32])
        shapes = Counter((s.in_features, s.out_features) for s in linears)
        reference = _count(linears, _floor_ranks(linears, fraction, r_min, multiple), total)
        assert _count_at(shapes, fraction, r_min, multiple, total) == reference
