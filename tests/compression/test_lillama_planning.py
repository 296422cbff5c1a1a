"""Lillama's rank allocation: bottom-first / top-first greedy plans and the config's planner."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimforge.compression.configs import LillamaConfig
from slimforge.compression.planning import (
    UnreachableTargetError,
    block_index,
    plan_layerwise,
    plan_uniform,
    reachable_range,
    resolve_target,
)
from tests.compression.test_planning import (
    SMOL_TOTAL,
    independent_count,
    smol_shapes,
    tiny_shapes,
)


def test_block_index() -> None:
    assert block_index("model.layers.3.self_attn.q_proj") == 3
    assert block_index("transformer.h.11.attn.c_attn") == 11
    assert block_index("model.layers.2.mlp.experts.5.w1") == 2
    assert block_index("lm_head") is None


@pytest.mark.parametrize("order", ["bottom", "top"])
@pytest.mark.parametrize("ratio", [0.5, 0.7, 0.8, 0.9, 0.95, 0.99])
def test_layerwise_plan_lands_within_one_percent_on_smollm2(order: str, ratio: float) -> None:
    shapes = smol_shapes()
    target = resolve_target(SMOL_TOTAL, ratio=ratio)
    plan = plan_layerwise(shapes, total_params=SMOL_TOTAL, target_params=target, order=order)
    assert abs(plan.params_after - target) <= 0.01 * target
    assert plan.params_after == independent_count(shapes, plan.ranks, SMOL_TOTAL)
    touched = sorted({block_index(n) for n in plan.ranks})
    assert touched, "a reduction must touch some block"
    # Only a contiguous run from the bottom (top) is factorised; the rest stays dense.
    k = len(touched)
    assert touched == (list(range(k)) if order == "bottom" else list(range(30 - k, 30)))
    by_name = {s.name: s for s in shapes}
    for name, r in plan.ranks.items():
        s = by_name[name]
        assert r % 8 == 0 and r >= 8
        assert r * (s.in_features + s.out_features) < s.in_features * s.out_features
    # Every block but the boundary one is at the thinnest rank.
    boundary = touched[-1] if order == "bottom" else touched[0]
    assert all(r == 8 for n, r in plan.ranks.items() if block_index(n) != boundary)


def test_bottom_first_touches_fewer_layers_for_smaller_cuts() -> None:
    shapes = smol_shapes()
    layers = []
    for ratio in (0.95, 0.9, 0.8):
        target = resolve_target(SMOL_TOTAL, ratio=ratio)
        plan = plan_layerwise(shapes, total_params=SMOL_TOTAL, target_params=target)
        layers.append(max(block_index(n) or 0 for n in plan.ranks))
    assert layers == sorted(layers) and layers[0] < layers[-1]


@pytest.mark.parametrize("order", ["bottom", "top"])
@pytest.mark.parametrize("ratio", [0.75, 0.8, 0.85, 0.9])
def test_layerwise_plan_on_tiny_shapes(order: str, ratio: float) -> None:
    shapes = tiny_shapes()
    total = sum(s.in_features * s.out_features for s in shapes) + 256 * 64 + 5 * 64
    target = resolve_target(total, ratio=ratio)
    plan = plan_layerwise(shapes, total_params=total, target_params=target, order=order)
    assert abs(plan.params_after - target) <= 0.01 * target
    assert plan.params_after == independent_count(shapes, plan.ranks, total)


@pytest.mark.parametrize("order", ["bottom", "top"])
def test_layerwise_unreachable_reports_the_range(order: str) -> None:
    shapes = smol_shapes()
    lo, hi = reachable_range(shapes, total_params=SMOL_TOTAL, min_rank=8, rank_multiple=8)
    target = resolve_target(SMOL_TOTAL, ratio=0.1)
    with pytest.raises(UnreachableTargetError) as info:
        plan_layerwise(shapes, total_params=SMOL_TOTAL, target_params=target, order=order)
    err = info.value
    assert (err.min_params, err.max_params, err.method) == (lo, hi, "lillama")
    assert "not reachable with method lillama" in str(err)
    with pytest.raises(UnreachableTargetError):
        plan_layerwise(shapes, total_params=SMOL_TOTAL, target_params=SMOL_TOTAL + 1, order=order)
    # The bottom of the range itself is reachable: every block at the thinnest rank.
    plan = plan_layerwise(shapes, total_params=SMOL_TOTAL, target_params=lo, order=order)
    assert plan.params_after == lo and set(plan.ranks.values()) == {8}


def test_layerwise_full_target_factorises_nothing() -> None:
    plan = plan_layerwise(smol_shapes(), total_params=SMOL_TOTAL, target_params=SMOL_TOTAL)
    assert plan.ranks == {} and plan.params_after == SMOL_TOTAL


def test_bad_order_is_refused() -> None:
    with pytest.raises(ValueError, match="order"):
        plan_layerwise(smol_shapes(), total_params=SMOL_TOTAL, target_params=SMOL_TOTAL, order="x")


def test_config_plan_dispatches_on_the_strategy() -> None:
    shapes = smol_shapes()
    target = resolve_target(SMOL_TOTAL, ratio=0.8)
    uniform = LillamaConfig().plan(shapes, total_params=SMOL_TOTAL, target_params=target)
    assert uniform == plan_uniform(shapes, total_params=SMOL_TOTAL, target_params=target)
    bottom = LillamaConfig(rank_strategy="bottom").plan(
        shapes, total_params=SMOL_TOTAL, target_params=target
    )
    assert max(block_index(n) or 0 for n in bottom.ranks) < 29
    top = LillamaConfig(rank_strategy="top").plan(
        shapes, total_params=SMOL_TOTAL, target_params=target
    )
    assert min(block_index(n) or 0 for n in top.ranks) > 0
    mlp_only = LillamaConfig(target_modules=["down_proj"]).plan(
        shapes, total_params=SMOL_TOTAL, target_params=resolve_target(SMOL_TOTAL, ratio=0.95)
    )
    assert all(n.endswith("down_proj") for n in mlp_only.ranks)
    with pytest.raises(UnreachableTargetError, match="method lillama"):
        LillamaConfig().plan(shapes, total_params=SMOL_TOTAL, target_params=1000)


def test_config_is_validated_and_torch_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pydantic import TypeAdapter\n"
        "from slimforge.compression.configs import MethodConfig, METHOD_CONFIGS\n"
        "c = TypeAdapter(MethodConfig).validate_python({'name': 'lillama', 'epochs': 2})\n"
        "assert type(c).__name__ == 'LillamaConfig' and c.epochs == 2\n"
        "assert 'lillama' in METHOD_CONFIGS\n"
        "assert 'torch' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
    with pytest.raises(ValueError):
        LillamaConfig.model_validate({"rank_strategy": "sensitivity"})
    with pytest.raises(ValueError):
        LillamaConfig.model_validate({"unknown": 1})


@pytest.mark.parametrize("order", ["bottom", "top"])
@pytest.mark.parametrize("ratio", [0.7, 0.8, 0.9])
def test_layer_fraction_keeps_taken_blocks_at_half_their_breakeven(
    order: str, ratio: float
) -> None:
    shapes = smol_shapes()
    target = resolve_target(SMOL_TOTAL, ratio=ratio)
    plan = plan_layerwise(
        shapes, total_params=SMOL_TOTAL, target_params=target, order=order, layer_fraction=0.5
    )
    assert abs(plan.params_after - target) <= 0.01 * target
    assert plan.params_after == independent_count(shapes, plan.ranks, SMOL_TOTAL)
    touched = sorted({block_index(n) for n in plan.ranks})
    k = len(touched)
    assert touched == (list(range(k)) if order == "bottom" else list(range(30 - k, 30)))
    boundary = touched[-1] if order == "bottom" else touched[0]
    by_name = {s.name: s for s in shapes}
    for name, r in plan.ranks.items():
        if block_index(name) == boundary:
            continue
        s = by_name[name]
        half = 0.5 * s.in_features * s.out_features / (s.in_features + s.out_features)
        assert r == int(half // 8) * 8
    # More layers are touched than at the thinnest rank.
    thin = plan_layerwise(shapes, total_params=SMOL_TOTAL, target_params=target, order=order)
    assert k > len({block_index(n) for n in thin.ranks})


def test_layer_fraction_falls_back_to_the_thinnest_rank_for_deep_cuts() -> None:
    shapes = smol_shapes()
    lo, _ = reachable_range(shapes, total_params=SMOL_TOTAL, min_rank=8, rank_multiple=8)
    plan = plan_layerwise(
        shapes, total_params=SMOL_TOTAL, target_params=lo, order="bottom", layer_fraction=0.5
    )
    assert plan.params_after == lo and set(plan.ranks.values()) == {8}
    assert LillamaConfig().layer_rank_fraction == 0.5
