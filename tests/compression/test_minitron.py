"""The ``minitron`` method end to end: search, prune, export, reload with plain transformers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from slimforge.compression import compress
from slimforge.compression.configs import MinitronConfig
from slimforge.compression.export import export_artifact
from slimforge.compression.lowrank import count_parameters
from slimforge.compression.methods import available_methods, get_method
from slimforge.compression.planning import UnreachableTargetError, resolve_target
from slimforge.compression.progress import RecordingReporter
from slimforge.compression.pruning.layout import arch_of
from tests.compression.helpers import (
    correlated_blocks,
    run_isolated,
    tiny_gemma,
    tiny_gemma2,
    tiny_llama,
    tiny_mistral,
    tiny_mixtral,
    tiny_phi,
    tiny_qwen2,
)

# Fine grids: the tiny models are ~100k parameters, so 1 % is a few hundred.
FINE = {"hidden_multiple": 16, "mlp_multiple": 1, "search_tokens": 64}

PLAIN_RELOAD = """
import json, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({path!r}).eval()  # no trust_remote_code
ids = torch.load({ids!r})
ref = torch.load({ref!r})
with torch.no_grad():
    logits = model(input_ids=ids).logits
gen = model.generate(ids[:1, :6], max_new_tokens=8, do_sample=False)
cfg = json.load(open({path!r} + "/config.json"))
print("RESULT:" + json.dumps({{
    "class": type(model).__name__,
    "max_diff": float((logits - ref).abs().max()),
    "generated": gen.tolist(),
    "params": sum(p.numel() for p in model.parameters()),
    "auto_map": "auto_map" in cfg,
    "shape": [cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"],
              cfg["num_hidden_layers"], cfg.get("head_dim"), cfg.get("num_local_experts")],
}}))
"""


def _export_and_reload(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> dict[str, object]:
    """Save ``model`` as an artifact, reload it in a fresh interpreter with plain transformers,
    and check it computes and generates what the in-memory model does."""
    ids = correlated_blocks(2, 16, seed=5)
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    expected = model.generate(ids[:1, :6], max_new_tokens=8, do_sample=False)
    dest = tmp_path / "pruned"
    export_artifact(model, tokenizer, dest, model_card="# pruned\n")
    torch.save(ids, tmp_path / "ids.pt")
    torch.save(ref, tmp_path / "ref.pt")
    out = run_isolated(
        PLAIN_RELOAD.format(
            path=str(dest), ids=str(tmp_path / "ids.pt"), ref=str(tmp_path / "ref.pt")
        ),
        tmp_path,
    )
    assert out["class"] == type(model).__name__ and not out["auto_map"]
    assert out["max_diff"] <= 1e-5 and out["generated"] == expected.tolist()
    assert out["params"] == count_parameters(model)
    return out


def test_minitron_is_registered_and_documented() -> None:
    assert "minitron" in available_methods()
    schema = MinitronConfig.model_json_schema()
    assert {"axes", "shape", "layer_metric", "max_candidates"} <= set(schema["properties"])
    with pytest.raises(ValueError):
        MinitronConfig(axes=["depth", "depth"])
    with pytest.raises(ValueError):
        MinitronConfig.model_validate({"axes": ["width"]})


@pytest.mark.parametrize(
    "factory",
    [lambda: tiny_llama(layers=4), tiny_qwen2, tiny_mistral, tiny_phi, tiny_gemma2],
    ids=["llama", "qwen2", "mistral", "phi", "gemma2"],
)
def test_prune_to_target_export_and_reload_without_custom_code(
    factory: Callable[[], PreTrainedModel], tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = factory()
    blocks = correlated_blocks(12, 16)
    total = count_parameters(model)
    target = resolve_target(total, ratio=0.8)
    reporter = RecordingReporter()
    result = compress(
        model, MinitronConfig(**FINE), blocks=blocks, target_params=target, reporter=reporter
    )
    assert abs(result.params_after / target - 1) <= 0.01
    assert result.params_after == count_parameters(model) and result.ranks == {}
    scored = [d for _, msg, d in reporter.events if msg == "candidate scored"]
    assert 1 <= len(scored) <= 8 and all(d["perplexity"] > 1 for d in scored)
    best = min(scored, key=lambda d: d["perplexity"])
    assert result.details["shape"]["params"] == best["params"]
    out = _export_and_reload(model, tokenizer, tmp_path)
    assert out["params"] == result.params_after
    assert out["shape"] == [
        model.config.hidden_size,
        model.config.intermediate_size,
        model.config.num_attention_heads,
        model.config.num_hidden_layers,
        model.config.head_dim,
        getattr(model.config, "num_local_experts", None),
    ]


@pytest.mark.parametrize("factory", [tiny_gemma, tiny_gemma2], ids=["gemma", "gemma2"])
def test_gemma_hidden_pruning_keeps_the_embedding_scale_on_reload(
    factory: Callable[[], PreTrainedModel], tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    """Gemma multiplies embeddings by sqrt(hidden_size), rebuilt from the config on load: a
    narrower hidden size must be compensated in the weights, or the reload computes another
    model."""
    model = factory()
    target = replace(arch_of(model), hidden=48, intermediate=96).params()
    config = MinitronConfig(**FINE, shape={"hidden_size": 48})
    result = compress(model, config, blocks=correlated_blocks(12, 16), target_params=target)
    assert model.config.hidden_size == 48 and result.details["shape"]["hidden_size"] == 48
    _export_and_reload(model, tokenizer, tmp_path)


def test_mixtral_experts_are_pruned_by_router_statistics(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    """Experts alone (the least routed-to go), then a full search over every axis; both
    export a standard Mixtral config. Expert widths stay multiples of 8 (grouped-matmul
    kernels need 16-byte strides), so targets are taken from reachable shapes: one 8-neuron
    step of the tiny model's experts is 6 % of it."""
    model = tiny_mixtral()
    arch = arch_of(model)
    target = replace(arch, experts=3).params()
    result = compress(
        model,
        MinitronConfig(**FINE, axes=["experts"]),
        blocks=correlated_blocks(12, 16),
        target_params=target,
    )
    assert model.config.num_local_experts == 3 and result.details["shape"]["num_local_experts"] == 3
    assert result.params_after == target
    out = _export_and_reload(model, tokenizer, tmp_path)
    assert out["shape"][5] == 3

    model = tiny_mixtral()
    target = replace(arch, experts=3, intermediate=72, layers=1).params()
    reporter = RecordingReporter()
    result = compress(
        model,
        MinitronConfig(**FINE),
        blocks=correlated_blocks(12, 16),
        target_params=target,
        reporter=reporter,
    )
    assert abs(result.params_after / target - 1) <= 0.01
    assert model.config.intermediate_size % 8 == 0
    scored = [d for _, msg, d in reporter.events if msg == "candidate scored"]
    assert len({d["num_local_experts"] for d in scored}) > 1  # expert counts were compared
    _export_and_reload(model, tokenizer, tmp_path / "searched")


def test_pinned_shape_and_depth_only() -> None:
    model = tiny_llama(layers=4)
    blocks = correlated_blocks(12, 16)
    total = count_parameters(model)
    config = MinitronConfig(**FINE, shape={"num_hidden_layers": 3})
    result = compress(model, config, blocks=blocks, target_params=int(total * 0.7))
    assert model.config.num_hidden_layers == 3 and len(result.details["kept_layers"]) == 3
    # Depth alone lands on 1, 2 or 3 of 4 layers: -40 % falls between two of them (the
    # closest is named), -20 % is above 3 layers (the range under these axes excludes it).
    depth_only = MinitronConfig(**FINE, axes=["depth"])
    with pytest.raises(UnreachableTargetError, match="minitron") as err:
        get_method("minitron").plan(
            tiny_llama(layers=4), depth_only, target_params=int(total * 0.6)
        )
    assert "closest achievable" in str(err.value) and "mlp" in str(err.value)
    with pytest.raises(UnreachableTargetError, match="reachable range") as err:
        get_method("minitron").plan(
            tiny_llama(layers=4), depth_only, target_params=int(total * 0.8)
        )
    assert err.value.max_params < int(total * 0.8)
    assert err.value.max_params == count_parameters(tiny_llama(layers=3))
    with pytest.raises(UnreachableTargetError, match="reachable range"):
        get_method("minitron").plan(tiny_llama(layers=4), depth_only, target_params=10)


def test_impossible_pins_are_named_not_reported_as_ranges() -> None:
    """Issue 15 case 5, in the library (the worker's check): a pinned size the search cannot
    produce is a ParameterConflict naming it and a size that works."""
    from slimforge.compression.parameters import ParameterConflict

    model, method = tiny_llama(), get_method("minitron")
    target = int(count_parameters(model) * 0.85)
    for shape, field, working in (
        ({"num_attention_heads": 3}, "shape.num_attention_heads", 4),
        ({"num_attention_heads": 6}, "shape.num_attention_heads", 4),
        ({"hidden_size": 40}, "shape.hidden_size", 48),
        ({"num_local_experts": 2}, "shape.num_local_experts", None),
    ):
        config = MinitronConfig(**FINE, shape=shape)
        with pytest.raises(ParameterConflict) as err:
            method.plan(model, config, target_params=target)
        assert err.value.field == field and err.value.working_value == working, err.value
    layers_only = MinitronConfig(**FINE, axes=["depth"], shape={"num_attention_heads": 2})
    with pytest.raises(ParameterConflict, match="'heads' axis is not in 'axes'"):
        method.plan(model, layers_only, target_params=target)


def test_perplexity_layer_metric_and_contiguous_cut() -> None:
    model = tiny_llama(layers=4)
    blocks = correlated_blocks(12, 16)
    total = count_parameters(model)
    config = MinitronConfig(
        **FINE,
        layer_metric="perplexity",
        contiguous_layers=True,
        shape={"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4},
    )
    result = compress(model, config, blocks=blocks, target_params=int(total * 0.5))
    kept = result.details["kept_layers"]
    assert kept[0] == 0 and kept[-1] == 3 and len(kept) == 2


def test_shared_expert_mixtures_fail_with_a_clear_message() -> None:
    from tests.compression.helpers import tiny_qwen2_moe

    with pytest.raises(ValueError, match="mixture-of-experts"):
        get_method("minitron").plan(tiny_qwen2_moe(), MinitronConfig(), target_params=1000)


def test_candidate_picking_covers_every_family_of_axes() -> None:
    from slimforge.compression.methods.minitron.method import _family, pick_candidates
    from slimforge.compression.pruning.arch import candidate_shapes
    from slimforge.compression.pruning.layout import arch_of
    from tests.compression.test_pruning import random_importance

    model = tiny_llama(layers=4)
    arch, imp = arch_of(model), random_importance(model)
    axes = ["depth", "heads", "mlp", "hidden"]
    found = candidate_shapes(
        arch, int(arch.params() * 0.75), axes=axes, hidden_multiple=16, mlp_multiple=1
    )
    families = {_family(arch, c.arch) for c in found}
    assert len(families) >= 4  # depth-only, width-only and mixed shapes all land
    picked = pick_candidates(arch, found, imp, limit=len(families))
    assert {_family(arch, c.arch) for c in picked} == families
    everything = pick_candidates(arch, found, imp, limit=1000)
    assert len(everything) == len(found) and set(everything) == set(found)
