"""The ``lillama`` method: loss, block trainer, layer capture, end to end on tiny models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from slimforge.compression import compress
from slimforge.compression.configs import LillamaConfig
from slimforge.compression.distill.blockwise import (
    feature_loss,
    lowrank_parameters,
    run_block,
    train_block,
)
from slimforge.compression.distill.streaming import capture_layer_inputs, decoder_layers
from slimforge.compression.export import export_artifact
from slimforge.compression.lowrank import LowRankLinear, count_parameters, find_linears
from slimforge.compression.methods import available_methods, get_method
from slimforge.compression.methods.factorization.factors import whitened_factors
from slimforge.compression.planning import UnreachableTargetError, block_index, resolve_target
from slimforge.compression.progress import Cancelled, RecordingReporter
from tests.compression.helpers import (
    correlated_blocks,
    run_isolated,
    tiny_gpt2,
    tiny_llama,
    tiny_mamba,
    tiny_mistral,
    tiny_phi,
    tiny_qwen2,
)
from tests.compression.test_export import RELOAD_SCRIPT

FAST = {"learning_rate": 1e-4, "batch_size": 4, "epochs": 3}


def reference_loss(a: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> float:
    """The paper's loss written out token by token in float64."""
    a, y = a.double().reshape(-1, a.shape[-1]), y.double().reshape(-1, y.shape[-1])
    m = torch.ones(a.shape[0], dtype=torch.float64) if mask is None else mask.double().reshape(-1)
    total, count = 0.0, 0.0
    for i in range(a.shape[0]):
        l1 = (a[i] - y[i]).abs().mean()
        cos = (a[i] @ y[i]) / (a[i].norm() * y[i].norm())
        total += float(m[i] * (l1 - torch.log(torch.sigmoid(cos))))
        count += float(m[i])
    return total / count


def test_registry() -> None:
    assert {"lillama", "svd"} <= set(available_methods())
    assert get_method("lillama").name == "lillama"


@pytest.mark.parametrize("masked", [False, True])
def test_feature_loss_matches_a_float64_reference(masked: bool) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3, 7, 16, generator=g)
    a = y + 0.3 * torch.randn(3, 7, 16, generator=g)
    a[0, 0] = -y[0, 0]  # one anti-aligned token: cos = -1
    mask = (torch.rand(3, 7, generator=g) > 0.3).long() if masked else None
    expected = reference_loss(a, y, mask)
    got = feature_loss(a, y, mask)
    assert got.dtype == torch.float32
    assert abs(float(got) - expected) < 1e-5
    # bf16 inputs are computed in float32, float64 stays float64.
    assert feature_loss(a.bfloat16(), y.bfloat16(), mask).dtype == torch.float32
    assert abs(float(feature_loss(a.double(), y.double(), mask)) - expected) < 1e-12
    # Identical outputs: only the bounded cosine term remains, -log sigmoid(1).
    assert abs(float(feature_loss(y, y)) + float(F.logsigmoid(torch.tensor(1.0)))) < 1e-6


def test_padding_does_not_count() -> None:
    y = torch.randn(2, 5, 8)
    a = y.clone()
    a[:, 3:] = 100.0  # garbage on padded positions
    mask = torch.ones(2, 5)
    mask[:, 3:] = 0
    assert abs(float(feature_loss(a, y, mask)) - float(feature_loss(y[:, :3], y[:, :3]))) < 1e-6


@pytest.mark.parametrize("factory", [tiny_llama, tiny_qwen2, tiny_mistral, tiny_gpt2])
def test_captured_inputs_reproduce_the_model(factory: Callable[[], PreTrainedModel]) -> None:
    model = factory()
    ids = correlated_blocks(6, 12)
    names = list(find_linears(model, LillamaConfig().target_modules))
    prefix, layers = decoder_layers(model, names)
    assert prefix in {"model.layers", "transformer.h"} and len(layers) == 2
    chunks = list(ids.split(4))  # a full and a partial batch
    xs, contexts = capture_layer_inputs(model, layers[0], chunks)
    assert [x.shape[0] for x in xs] == [4, 2]
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        out = torch.cat(
            [run_block(layers[0], x, *ctx) for x, ctx in zip(xs, contexts, strict=True)]
        )
    torch.testing.assert_close(torch.cat(xs), hidden[0])
    torch.testing.assert_close(out, hidden[1])


def tiny_block_setup() -> tuple[torch.nn.Module, list, list, list, list]:
    """Layer 0 of a tiny Llama with its q/up/down factorised, plus its teacher data."""
    model = tiny_llama()
    layer = model.model.layers[0]
    chunks = list(correlated_blocks(8, 16).split(4))
    xs, contexts = capture_layer_inputs(model, layer, chunks)
    with torch.no_grad():
        ys = [run_block(layer, x, *ctx) for x, ctx in zip(xs, contexts, strict=True)]
    for short in ("self_attn.q_proj", "mlp.up_proj", "mlp.down_proj"):
        dense = layer.get_submodule(short)
        a, b = whitened_factors(dense.weight.detach(), torch.eye(dense.in_features), 8, 1e-4)
        low = LowRankLinear(dense.in_features, dense.out_features, 8, False)
        with torch.no_grad():
            low.first.weight.copy_(a)
            low.second.weight.copy_(b)
        parent, _, child = short.rpartition(".")
        setattr(layer.get_submodule(parent), child, low)
    return layer, xs, [x + 0.05 * torch.randn_like(x) for x in xs], ys, contexts


def test_train_block_lowers_the_joint_loss_and_trains_only_factors() -> None:
    layer, x_t, x_s, ys, contexts = tiny_block_setup()
    frozen = {n: p.detach().clone() for n, p in layer.named_parameters() if "first" not in n}
    frozen = {n: p for n, p in frozen.items() if "second" not in n}
    checks = []
    result = train_block(
        layer, x_t, x_s, ys, contexts, learning_rate=3e-3, epochs=9, check=lambda: checks.append(1)
    )
    assert result.steps == 18 and len(checks) == 2  # every 16 steps
    assert result.loss_after < result.loss_before
    for name, p in layer.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    assert len(lowrank_parameters(layer)) == 6
    capped = train_block(layer, x_t, x_s, ys, contexts, epochs=5, max_steps=3)
    assert capped.steps == 3
    with pytest.raises(ValueError, match="align"):
        train_block(layer, x_t, x_s[:1], ys, contexts)


def test_train_block_checks_cancellation() -> None:
    layer, x_t, x_s, ys, contexts = tiny_block_setup()
    reporter = RecordingReporter(cancel_after=0)
    with pytest.raises(Cancelled):
        train_block(layer, x_t, x_s, ys, contexts, check=reporter.check_cancelled)


@pytest.mark.parametrize(
    "factory", [tiny_llama, tiny_qwen2, tiny_gpt2, tiny_mistral, tiny_phi, tiny_mamba]
)
def test_lillama_end_to_end_exports_and_reloads(
    factory: Callable[[], PreTrainedModel],
    tmp_path: Path,
    tokenizer: PreTrainedTokenizerFast,
) -> None:
    model = factory()
    total = count_parameters(model)
    target = resolve_target(total, ratio=0.8)
    dense = dict(find_linears(model, LillamaConfig().target_modules))
    reporter = RecordingReporter()
    config = LillamaConfig(**FAST)
    result = compress(
        model, config, blocks=correlated_blocks(16, 16), target_params=target, reporter=reporter
    )
    assert result.params_before == total and result.params_after == count_parameters(model)
    assert abs(result.params_after - target) <= 0.01 * target
    assert result.tokens_used == 16 * 16
    blocks = result.details["blocks"]
    assert [b["block"].rsplit(".", 1)[-1] for b in blocks] == ["0", "1"]
    assert all(b["steps"] == 12 for b in blocks)  # 4 batches x 3 epochs
    before = sum(b["loss_before"] for b in blocks) / len(blocks)
    after = sum(b["loss_after"] for b in blocks) / len(blocks)
    assert after < before
    for name, rank in result.ranks.items():
        low = model.get_submodule(name)
        assert isinstance(low, LowRankLinear) and low.rank == rank
        assert low.first.weight.dtype == torch.float32
        old_bias = getattr(dense[name], "bias", None)
        if old_bias is not None:  # biases are kept (and frozen)
            assert torch.equal(low.second.bias, old_bias)
    layer_events = [e for e in reporter.events if "loss_after" in e[2]]
    assert len(layer_events) == 2
    data = layer_events[-1][2]
    assert {
        "block",
        "index",
        "total",
        "ranks",
        "loss_before",
        "loss_after",
        "steps",
        "seconds",
    } <= set(data)
    assert (data["index"], data["total"]) == (2, 2)

    dest = tmp_path / "artifact"
    export_artifact(model, tokenizer, dest, model_card="# card\n", lowrank_ranks=result.ranks)
    ids = correlated_blocks(2, 12, seed=5)
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    torch.save(ids, tmp_path / "ids.pt")
    torch.save(ref, tmp_path / "ref.pt")
    out = run_isolated(
        RELOAD_SCRIPT.format(
            path=str(dest), ids=str(tmp_path / "ids.pt"), ref=str(tmp_path / "ref.pt")
        ),
        tmp_path,
    )
    assert out["max_diff"] <= 1e-5
    assert out["lowrank"] == sorted(result.ranks)
    assert out["params"] == result.params_after


def test_training_improves_on_the_whitened_initialisation() -> None:
    blocks = correlated_blocks(16, 16)
    teacher = tiny_llama()
    ids = correlated_blocks(4, 16, seed=3)
    errors = {}
    for steps in (0, None):
        model = tiny_llama()
        target = resolve_target(count_parameters(model), ratio=0.8)
        cfg = LillamaConfig(**FAST, max_steps_per_block=steps) if steps else LillamaConfig(**FAST)
        if steps == 0:  # no training at all: the whitened initialisation alone
            cfg = LillamaConfig(learning_rate=1e-12, batch_size=4, max_steps_per_block=1)
        compress(model, cfg, blocks=blocks, target_params=target)
        with torch.no_grad():
            errors[steps] = float(
                (model(input_ids=ids).logits - teacher(input_ids=ids).logits).norm()
            )
    assert errors[None] < errors[0]


def test_bottom_first_touches_only_the_lower_layers() -> None:
    model = tiny_llama()
    teacher_top = {n: p.clone() for n, p in model.model.layers[1].named_parameters()}
    target = resolve_target(count_parameters(model), ratio=0.9)
    reporter = RecordingReporter()
    result = compress(
        model,
        LillamaConfig(rank_strategy="bottom", **FAST),
        blocks=correlated_blocks(8, 16),
        target_params=target,
        reporter=reporter,
    )
    assert abs(result.params_after - target) <= 0.01 * target
    assert {block_index(n) for n in result.ranks} == {0}
    assert len(result.details["blocks"]) == 1  # layer 1 was never run
    for n, p in model.model.layers[1].named_parameters():
        assert torch.equal(p, teacher_top[n])


def test_top_first_passes_the_untouched_lower_layers() -> None:
    model = tiny_qwen2()
    target = resolve_target(count_parameters(model), ratio=0.9)
    result = compress(
        model,
        LillamaConfig(rank_strategy="top", **FAST),
        blocks=correlated_blocks(8, 16),
        target_params=target,
    )
    assert {block_index(n) for n in result.ranks} == {1}
    first, second = result.details["blocks"]
    assert first["steps"] == 0 and first["ranks"] == {} and second["steps"] > 0


def test_plan_matches_run_and_unreachable_fails_before_work() -> None:
    model = tiny_llama()
    target = resolve_target(count_parameters(model), ratio=0.85)
    plan = get_method("lillama").plan(model, LillamaConfig(), target_params=target)
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())
    reporter = RecordingReporter()
    with pytest.raises(UnreachableTargetError, match="lillama"):
        compress(
            model,
            LillamaConfig(),
            blocks=correlated_blocks(2, 8),
            target_params=1000,
            reporter=reporter,
        )
    assert reporter.checks == 0 and reporter.events == []
    result = get_method("lillama").run(
        model,
        {"max_steps_per_block": 1},
        blocks=correlated_blocks(2, 8),
        target_params=target,
        reporter=RecordingReporter(),
    )
    assert result.ranks == plan.ranks and result.params_after == plan.params_after


@pytest.mark.parametrize("cancel_after", [0, 2, 4])
def test_cancellation(cancel_after: int) -> None:
    model = tiny_llama()
    target = resolve_target(count_parameters(model), ratio=0.8)
    reporter = RecordingReporter(cancel_after=cancel_after)
    with pytest.raises(Cancelled):
        compress(
            model,
            LillamaConfig(**FAST),
            blocks=correlated_blocks(8, 8),
            target_params=target,
            reporter=reporter,
        )
    assert reporter.checks == cancel_after + 1


def test_energy_strategy_plans_from_measured_spectra() -> None:
    model = tiny_llama()
    target = resolve_target(count_parameters(model), ratio=0.8)
    reporter = RecordingReporter()
    result = compress(
        model,
        LillamaConfig(rank_strategy="energy", **FAST),
        blocks=correlated_blocks(8, 16),
        target_params=target,
        reporter=reporter,
    )
    assert abs(result.params_after - target) <= 0.01 * target
    assert result.params_after == count_parameters(model)
    measured = [e for e in reporter.events if e[1].startswith("measured block")]
    assert len(measured) == 2
    uniform = get_method("lillama").plan(tiny_llama(), LillamaConfig(), target_params=target)
    assert result.ranks != uniform.ranks  # the spectra, not the shapes, decided
    for name, rank in result.ranks.items():
        assert model.get_submodule(name).rank == rank
