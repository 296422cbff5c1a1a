"""Structured pruning maths: parameter counts, shape search, importance, exact unit removal."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from slimforge.compression.lowrank import count_parameters
from slimforge.compression.pruning.arch import candidate_shapes
from slimforge.compression.pruning.importance import (
    Importance,
    layer_removal_scores,
    measure_importance,
)
from slimforge.compression.pruning.layout import arch_of, model_layout
from slimforge.compression.pruning.prune import choose_layers, prune_model, top_indices
from tests.compression.helpers import (
    correlated_blocks,
    tiny_gemma,
    tiny_gemma2,
    tiny_llama,
    tiny_mistral,
    tiny_phi,
    tiny_qwen2,
)

DENSE: dict[str, Callable[[], PreTrainedModel]] = {
    "llama": lambda: tiny_llama(layers=4),
    "qwen2": tiny_qwen2,
    "mistral": tiny_mistral,
    "phi": tiny_phi,
    "gemma": tiny_gemma,
    "gemma2": tiny_gemma2,
}


def random_importance(model: PreTrainedModel, seed: int = 0) -> Importance:
    a = arch_of(model)
    g = torch.Generator().manual_seed(seed)
    return Importance(
        heads=torch.rand(a.layers, a.heads, generator=g),
        neurons=torch.rand(a.layers, a.intermediate, generator=g),
        hidden=torch.rand(a.hidden, generator=g),
        layers=torch.rand(a.layers, generator=g),
    )


@pytest.mark.parametrize("name", DENSE)
def test_arch_counts_every_parameter_before_and_after_pruning(name: str) -> None:
    model = DENSE[name]()
    arch = arch_of(model)
    assert arch.params() == count_parameters(model)
    shape = replace(
        arch,
        hidden=48,
        intermediate=96,
        heads=arch.kv_heads * max(1, arch.heads_per_group // 2),
        layers=arch.layers - 1,
    )
    prune_model(model, shape, random_importance(model), layers=list(range(1, arch.layers)))
    assert arch_of(model) == shape and count_parameters(model) == shape.params()
    cfg = model.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (48, 96, shape.layers)
    assert cfg.head_dim == arch.head_dim and cfg.num_attention_heads == shape.heads
    with torch.no_grad():
        out = model(input_ids=correlated_blocks(2, 12)).logits
    assert out.shape == (2, 12, arch.vocab) and torch.isfinite(out).all()


def test_candidates_land_within_tolerance_on_the_allowed_axes() -> None:
    arch = arch_of(tiny_llama(layers=4))
    target = int(arch.params() * 0.7)
    axes = ["depth", "heads", "mlp", "hidden"]
    everything = candidate_shapes(arch, target, axes=axes, hidden_multiple=16, mlp_multiple=1)
    assert everything and all(abs(c.params / target - 1) <= 0.01 for c in everything)
    assert all(c.params == c.arch.params() for c in everything)
    assert [abs(c.error) for c in everything] == sorted(abs(c.error) for c in everything)
    assert {c.arch.hidden for c in everything} > {64} and {c.arch.layers for c in everything} > {4}
    assert all(c.arch.hidden % 16 == 0 and c.arch.heads % arch.kv_heads == 0 for c in everything)
    # Coarse MLP steps (32 neurons x 4 layers is ~20 % of this model) miss a target between.
    between = replace(arch, intermediate=64).params() + replace(arch, intermediate=96).params()
    assert candidate_shapes(arch, between // 2, axes=["mlp"], mlp_multiple=32) == []
    assert candidate_shapes(arch, between // 2, axes=["mlp"], mlp_multiple=16)
    mlp_only = candidate_shapes(arch, target, axes=["mlp"], mlp_multiple=1)
    assert mlp_only and all(
        replace(c.arch, intermediate=arch.intermediate) == arch for c in mlp_only
    )
    # Depth alone moves in whole-layer steps: a -20 % target between two depths has no shape.
    assert candidate_shapes(arch, target, axes=["depth"]) == []
    one_layer_less = replace(arch, layers=3).params()
    assert candidate_shapes(arch, one_layer_less, axes=["depth"])[0].arch.layers == 3
    with pytest.raises(ValueError, match="unknown pruning axes"):
        candidate_shapes(arch, target, axes=["width"])


def test_top_indices_and_layer_choice() -> None:
    assert top_indices(torch.tensor([0.1, 0.9, 0.5, 0.9]), 2).tolist() == [1, 3]
    scores = torch.tensor([5.0, 0.2, 0.1, 3.0, 0.3, 0.05, 4.0])
    assert choose_layers(scores, 5, contiguous=False) == [0, 1, 3, 4, 6]
    # Contiguous: the cheapest window of 2 that is neither first nor last block: [1, 2].
    assert choose_layers(scores, 5, contiguous=True) == [0, 3, 4, 5, 6]
    assert choose_layers(scores, 7, contiguous=True) == list(range(7))


@pytest.mark.parametrize("name", ["llama", "qwen2", "phi", "gemma2"])
def test_removing_heads_and_neurons_equals_zeroing_them(name: str) -> None:
    """Dropping a head / neuron is exact: the same as zeroing its column of the output
    projection (o_proj / down_proj) in the unpruned model."""
    model = DENSE[name]()
    arch = arch_of(model)
    imp = random_importance(model, seed=1)
    per_group = max(1, arch.heads_per_group // 2)
    shape = replace(arch, intermediate=arch.intermediate // 2, heads=arch.kv_heads * per_group)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for i, b in enumerate(model_layout(reference).blocks):
            keep_n = top_indices(imp.neurons[i], shape.intermediate)
            drop_n = torch.ones(arch.intermediate, dtype=torch.bool)
            drop_n[keep_n] = False
            b.down.weight[:, drop_n] = 0
            groups = imp.heads[i].view(arch.kv_heads, -1)
            for g in range(arch.kv_heads):
                kept = set(top_indices(groups[g], per_group).tolist())
                for h in range(arch.heads_per_group):
                    if h not in kept:
                        head = g * arch.heads_per_group + h
                        b.o.weight[:, head * arch.head_dim : (head + 1) * arch.head_dim] = 0
    prune_model(model, shape, imp, layers=list(range(arch.layers)))
    ids = correlated_blocks(2, 16)
    with torch.no_grad():
        got, want = model(input_ids=ids).logits, reference(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_dropping_layers_equals_skipping_them() -> None:
    model = tiny_llama(layers=4)
    reference = copy.deepcopy(model)
    shape = replace(arch_of(model), layers=2)
    prune_model(model, shape, random_importance(model), layers=[0, 3])
    base = reference.model
    base.layers = torch.nn.ModuleList([base.layers[0], base.layers[3]])
    reference.config.num_hidden_layers = 2
    ids = correlated_blocks(2, 16)
    with torch.no_grad():
        want = reference(input_ids=ids, use_cache=False).logits  # its layer_idx are stale
        torch.testing.assert_close(model(input_ids=ids).logits, want)
    # Renumbered for the KV cache: generation with a cache works.
    assert [blk.self_attn.layer_idx for blk in model.model.layers] == [0, 1]
    assert model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False).shape == (1, 7)


def test_importance_matches_a_written_out_reference() -> None:
    model = tiny_llama(layers=3)
    blocks = correlated_blocks(6, 16, seed=2)
    imp = measure_importance(model, blocks, batch_size=4)
    arch = arch_of(model)
    lay = model_layout(model)
    # Reference: capture the inputs of o_proj / down_proj and the norm outputs per sequence.
    o_in: list[list[torch.Tensor]] = [[] for _ in range(arch.layers)]
    down_in: list[list[torch.Tensor]] = [[] for _ in range(arch.layers)]
    norms = [n for b in lay.blocks for n in b.norms] + [lay.final_norm]
    norm_out: list[list[torch.Tensor]] = [[] for _ in norms]
    hooks = []
    for i, b in enumerate(lay.blocks):
        hooks.append(b.o.register_forward_pre_hook(lambda m, a, i=i: o_in[i].append(a[0])))
        hooks.append(b.down.register_forward_pre_hook(lambda m, a, i=i: down_in[i].append(a[0])))
    for j, n in enumerate(norms):
        hooks.append(n.register_forward_hook(lambda m, a, o, j=j: norm_out[j].append(o)))
    with torch.no_grad():
        hidden = model(input_ids=blocks, output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    for i in range(arch.layers):
        x = torch.cat(o_in[i]).double()  # [n, t, heads * hd]
        heads = torch.stack(
            [
                torch.stack(
                    [
                        x[s, :, h * arch.head_dim : (h + 1) * arch.head_dim].norm(dim=-1).mean()
                        for h in range(arch.heads)
                    ]
                )
                for s in range(x.shape[0])
            ]
        )  # [n, heads]: mean over the sequence per sample
        torch.testing.assert_close(imp.heads[i].double(), heads.norm(dim=0), rtol=1e-4, atol=0)
        a = torch.cat(down_in[i]).double().abs().mean(dim=1)  # [n, intermediate]
        torch.testing.assert_close(imp.neurons[i].double(), a.norm(dim=0), rtol=1e-4, atol=0)
    channel = sum(torch.cat(o).double().abs().mean(dim=1).norm(dim=0) for o in norm_out)
    torch.testing.assert_close(imp.hidden.double(), channel, rtol=1e-4, atol=0)
    # Block importance of the blocks whose output hidden_states shows un-normalised.
    for i in range(arch.layers - 1):
        cos = F.cosine_similarity(hidden[i].double(), hidden[i + 1].double(), dim=-1).mean()
        assert float(imp.layers[i]) == pytest.approx(1 - float(cos), rel=1e-4, abs=1e-6)


def test_layer_removal_scores_restore_the_model() -> None:
    model = tiny_llama(layers=3)
    blocks = correlated_blocks(4, 16)
    before = [id(m) for m in model.model.layers]
    scores = layer_removal_scores(model, blocks)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    assert [id(m) for m in model.model.layers] == before


@pytest.mark.parametrize("name", [*DENSE, "mixtral"])
def test_arch_from_config_matches_the_loaded_model(name: str) -> None:
    """The API's torch-free reading of config.json gives the shape the worker will see."""
    from slimforge.compression.pruning.arch import arch_from_config
    from tests.compression.helpers import tiny_mixtral

    model = tiny_mixtral() if name == "mixtral" else DENSE[name]()
    config = json.loads(model.config.to_json_string(use_diff=True))  # what save_pretrained writes
    total = count_parameters(model)
    assert arch_from_config(config, total) == arch_of(model)
    assert arch_from_config(config, total + 1) is None  # a count it cannot explain: no plan
    assert arch_from_config({**config, "model_type": "mamba"}, total) is None


def test_record_io_keeps_inputs_and_outputs_as_given_or_as_cpu_rows() -> None:
    from slimforge.compression.pruning.hooks import record_io

    linear = torch.nn.Linear(3, 2)
    x = torch.randn(2, 5, 3)
    ins: list[torch.Tensor] = []
    rows: list[torch.Tensor] = []
    handles = [record_io(linear, ins, "in"), record_io(linear, rows, "out", rows_on_cpu=True)]
    y = linear(x)
    for handle in handles:
        handle.remove()
    linear(x)  # removed: records nothing more
    assert len(ins) == len(rows) == 1
    torch.testing.assert_close(ins[0], x, rtol=0, atol=0)
    assert rows[0].shape == (10, 2) and rows[0].dtype == torch.float32
    torch.testing.assert_close(rows[0], y.detach().reshape(10, 2), rtol=0, atol=0)
