"""The ``svd`` method on tiny models: target reached, maths per module, cancellation, registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import PreTrainedModel

from slimforge.compression import compress
from slimforge.compression.configs import SvdConfig
from slimforge.compression.lowrank import LowRankLinear, count_parameters, find_linears
from slimforge.compression.methods import available_methods, get_method
from slimforge.compression.planning import UnreachableTargetError, resolve_target
from slimforge.compression.progress import Cancelled, RecordingReporter
from tests.compression.helpers import (
    correlated_blocks,
    tiny_gpt2,
    tiny_llama,
    tiny_mistral,
    tiny_qwen2,
)


def test_registry() -> None:
    assert "svd" in available_methods()
    assert get_method("svd").name == "svd"
    with pytest.raises(ValueError, match=r"available: .*svd"):
        get_method("nope")


def output_error(model: torch.nn.Module, teacher: torch.nn.Module, blocks: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(input_ids=blocks).logits - teacher(input_ids=blocks).logits).norm())


@pytest.mark.parametrize("factory", [tiny_llama, tiny_qwen2, tiny_mistral, tiny_gpt2])
def test_svd_reaches_the_target_and_keeps_biases(
    factory: Callable[[], PreTrainedModel],
) -> None:
    model = factory()
    total = count_parameters(model)
    target = resolve_target(total, ratio=0.8)
    dense = {n: m for n, m in find_linears(model, SvdConfig().target_modules).items()}
    reporter = RecordingReporter()
    result = compress(
        model, SvdConfig(), blocks=correlated_blocks(8, 16), target_params=target, reporter=reporter
    )
    assert result.params_before == total
    assert result.params_after == count_parameters(model)
    assert abs(result.params_after - target) <= 0.01 * target
    assert result.tokens_used == 8 * 16
    assert result.ranks and result.details["whitening"] is True
    for name, rank in result.ranks.items():
        low = model.get_submodule(name)
        assert isinstance(low, LowRankLinear) and low.rank == rank
        old_bias = getattr(dense[name], "bias", None)
        if old_bias is not None:
            assert torch.equal(low.second.bias, old_bias)
        else:
            assert low.second.bias is None
    # One event per calibration batch and per decoder block, plus the plan: not per module.
    assert len(reporter.events) <= 2 + 2 + 1
    block_events = [e for e in reporter.events if "ranks" in e[2]]
    assert len(block_events) == 2 and block_events[0][2]["total"] == 2


def test_whitening_beats_plain_svd_on_calibration_data() -> None:
    blocks = correlated_blocks(8, 16)
    teacher = tiny_llama()
    errors = {}
    for whitening in (True, False):
        model = tiny_llama()
        target = resolve_target(count_parameters(model), ratio=0.8)
        result = compress(
            model, SvdConfig(whitening=whitening), blocks=blocks, target_params=target
        )
        assert result.tokens_used == (128 if whitening else 0)
        errors[whitening] = output_error(model, teacher, blocks)
    assert errors[True] < errors[False]


def test_plan_is_cheap_and_matches_run() -> None:
    model = tiny_llama()
    target = resolve_target(count_parameters(model), ratio=0.85)
    plan = get_method("svd").plan(model, SvdConfig(), target_params=target)
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())  # untouched
    result = compress(model, SvdConfig(), blocks=correlated_blocks(2, 8), target_params=target)
    assert result.ranks == plan.ranks and result.params_after == plan.params_after
    with pytest.raises(UnreachableTargetError):
        get_method("svd").plan(model, SvdConfig(), target_params=10)


def test_unreachable_target_fails_before_any_work() -> None:
    model = tiny_llama()
    reporter = RecordingReporter()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnreachableTargetError):
        compress(
            model,
            SvdConfig(),
            blocks=correlated_blocks(2, 8),
            target_params=1000,
            reporter=reporter,
        )
    assert reporter.checks == 0 and reporter.events == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cancellation_is_checked_between_blocks() -> None:
    model = tiny_llama()
    target = resolve_target(count_parameters(model), ratio=0.8)
    # 2 calibration batches pass, the first decoder block then finds the job cancelled.
    reporter = RecordingReporter(cancel_after=3)
    with pytest.raises(Cancelled):
        compress(
            model,
            SvdConfig(),
            blocks=correlated_blocks(8, 8),
            target_params=target,
            reporter=reporter,
        )
    assert reporter.checks == 4


def test_config_may_be_a_plain_dict() -> None:
    model = tiny_llama()
    target = resolve_target(count_parameters(model), ratio=0.9)
    result = get_method("svd").run(
        model,
        {"whitening": False, "target_modules": ["gate_proj", "up_proj", "down_proj"]},
        blocks=correlated_blocks(2, 8),
        target_params=target,
        reporter=RecordingReporter(),
    )
    assert all(n.split(".")[-1] in {"gate_proj", "up_proj", "down_proj"} for n in result.ranks)


@pytest.mark.parametrize("whitening", [True, False])
def test_energy_allocation_follows_the_measured_spectra(whitening: bool) -> None:
    model = tiny_llama()
    target = resolve_target(count_parameters(model), ratio=0.8)
    config = SvdConfig(allocation="energy", whitening=whitening)
    result = compress(model, config, blocks=correlated_blocks(4, 16), target_params=target)
    assert abs(result.params_after - target) <= 0.01 * target
    assert result.params_after == count_parameters(model)
    assert result.details["allocation"] == "energy"
    uniform = get_method("svd").plan(tiny_llama(), SvdConfig(), target_params=target)
    assert result.ranks != uniform.ranks
