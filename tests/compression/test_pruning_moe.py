"""Structured pruning of Mixtral-style mixtures of experts: counts, importance, exact removal."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from slimforge.compression.lowrank import count_parameters
from slimforge.compression.pruning.arch import candidate_shapes
from slimforge.compression.pruning.importance import measure_importance
from slimforge.compression.pruning.layout import arch_of, model_layout
from slimforge.compression.pruning.prune import prune_model, top_indices
from tests.compression.helpers import correlated_blocks, tiny_mixtral, tiny_qwen2_moe


def test_arch_counts_experts_before_and_after_pruning() -> None:
    model = tiny_mixtral()
    arch = arch_of(model)
    assert (arch.experts, arch.experts_per_tok, arch.intermediate) == (4, 2, 96)
    assert arch.params() == count_parameters(model)
    imp = measure_importance(model, correlated_blocks(6, 16))
    shape = replace(arch, experts=3, intermediate=64, hidden=48, heads=arch.kv_heads, layers=1)
    prune_model(model, shape, imp, layers=[1])
    assert arch_of(model) == shape and count_parameters(model) == shape.params()
    cfg = model.config
    assert (cfg.num_local_experts, cfg.intermediate_size, cfg.hidden_size) == (3, 64, 48)
    out = model(input_ids=correlated_blocks(2, 12)).logits
    assert out.shape == (2, 12, arch.vocab) and torch.isfinite(out).all()


def test_expert_counts_are_searched_down_to_the_experts_each_token_uses() -> None:
    arch = arch_of(tiny_mixtral())
    one_expert_less = replace(arch, experts=3).params()
    found = candidate_shapes(arch, one_expert_less, axes=["experts"])
    assert [c.arch.experts for c in found] == [3]
    assert found[0].describe()["num_local_experts"] == 3
    assert candidate_shapes(arch, replace(arch, experts=1).params(), axes=["experts"]) == []
    # Expert widths stay multiples of 8 (grouped-matmul kernels), whatever mlp_multiple says.
    target = replace(arch, experts=2, intermediate=88).params()
    mixed = candidate_shapes(arch, target, axes=["experts", "mlp"], mlp_multiple=1)
    assert 2 in {c.arch.experts for c in mixed}
    assert all(c.arch.intermediate % 8 == 0 for c in mixed)
    assert all(c.arch.experts >= arch.experts_per_tok for c in mixed)


def _reference_router(weight: torch.Tensor, top_k: int, removed: list[int]) -> Any:
    """Mixtral's routing written out, with the ``removed`` experts unavailable."""

    def route(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = F.linear(hidden.reshape(-1, weight.shape[1]), weight).float()
        masked = logits.clone()
        masked[:, removed] = float("-inf")
        probs = masked.softmax(dim=-1)
        top, index = probs.topk(top_k, dim=-1)
        return logits, top / top.sum(dim=-1, keepdim=True), index

    return route


def test_importance_of_experts_matches_a_written_out_reference() -> None:
    model = tiny_mixtral()
    blocks = correlated_blocks(6, 16, seed=2)
    imp = measure_importance(model, blocks, batch_size=4)
    assert imp.experts is not None and imp.neurons.shape == (2, 4, 96)
    inputs: list[torch.Tensor] = []
    lay = model_layout(model)
    hook = lay.blocks[1].block.mlp.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    with torch.no_grad():
        model(input_ids=blocks)
    hook.remove()
    moe = lay.blocks[1].moe
    assert moe is not None
    x = torch.cat(inputs).double()  # [n, t, hidden]
    n, t, _ = x.shape
    _, weights, index = _reference_router(moe.router.weight.double(), 2, [])(x)
    routed = torch.zeros(4, dtype=torch.float64)
    act = torch.zeros(4, n, t, 96, dtype=torch.float64)
    flat = x.reshape(-1, x.shape[-1])
    for tok in range(n * t):
        for slot in range(2):
            e = int(index[tok, slot])
            routed[e] += weights[tok, slot]
            gate_up = moe.experts.gate_up_proj[e].double() @ flat[tok]
            a = F.silu(gate_up[:96]) * gate_up[96:]
            act[e, tok // t, tok % t] = a.abs()
    torch.testing.assert_close(imp.experts[1].double(), routed / (n * t), rtol=1e-4, atol=1e-7)
    want = act.mean(dim=2).norm(dim=1)  # mean over the sequence, L2 over samples: [4, 96]
    torch.testing.assert_close(imp.neurons[1].double(), want, rtol=1e-4, atol=1e-7)


def test_removing_experts_and_neurons_equals_masking_them() -> None:
    """Dropping an expert is routing without it; dropping an expert's neuron is zeroing its
    up-projection row (act(gate) * 0 = 0) in the unpruned model."""
    model = tiny_mixtral()
    arch = arch_of(model)
    imp = measure_importance(model, correlated_blocks(6, 16))
    assert imp.experts is not None
    shape = replace(arch, experts=3, intermediate=48)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for i, b in enumerate(model_layout(reference).blocks):
            moe = b.moe
            assert moe is not None
            kept = top_indices(imp.experts[i], 3).tolist()
            removed = [e for e in range(4) if e not in kept]
            moe.router.forward = _reference_router(moe.router.weight, 2, removed)
            for e in kept:
                drop = torch.ones(96, dtype=torch.bool)
                drop[top_indices(imp.neurons[i, e], 48)] = False
                moe.experts.gate_up_proj[e, 96:][drop] = 0
    prune_model(model, shape, imp, layers=list(range(arch.layers)))
    ids = correlated_blocks(2, 16)
    with torch.no_grad():
        got, want = model(input_ids=ids).logits, reference(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_shared_expert_models_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="mixture-of-experts MLP other than Mixtral"):
        arch_of(tiny_qwen2_moe())
