"""LowRankLinear, module discovery/replacement, and the SVD factor maths vs float64 references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimforge.compression.lowrank import (
    LowRankLinear,
    count_parameters,
    dense_weight,
    find_linears,
    linear_shapes,
    set_module,
)
from slimforge.compression.methods.factorization.factors import (
    cholesky_whitener,
    plain_factors,
    whitened_factors,
)
from tests.compression.helpers import tiny_gpt2, tiny_llama, tiny_qwen2

F64 = torch.float64


def correlated_inputs(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """X [n, d] with strongly correlated, unequally scaled features (like LLM activations)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=F64)
    mix = torch.randn(d, d, generator=g, dtype=F64) * torch.logspace(0, -2, d, dtype=F64)
    return z @ mix + 0.01 * torch.randn(n, d, generator=g, dtype=F64)


def symmetric_sqrt_reference(w: torch.Tensor, gram: torch.Tensor, rank: int) -> torch.Tensor:
    """Independent optimum: truncate W·C^½ (symmetric root by eigendecomposition), undo C^½."""
    lam, q = torch.linalg.eigh(gram)
    root = q @ torch.diag(lam.sqrt()) @ q.T
    inv_root = q @ torch.diag(lam.rsqrt()) @ q.T
    u, s, vh = torch.linalg.svd(w @ root, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank] @ inv_root


@pytest.mark.parametrize(("out_f", "in_f", "rank"), [(48, 40, 12), (24, 64, 8), (80, 32, 20)])
def test_whitened_factors_are_output_optimal(out_f: int, in_f: int, rank: int) -> None:
    torch.manual_seed(1)
    w = torch.randn(out_f, in_f, dtype=F64)
    x = correlated_inputs(600, in_f)  # [tokens, in]
    gram = x.T @ x
    a, b = whitened_factors(w, gram, rank, damping=0.0)
    assert a.shape == (rank, in_f) and b.shape == (out_f, rank) and a.dtype == F64

    err = ((w - b @ a) @ x.T).pow(2).sum()
    s = torch.linalg.cholesky(gram)
    sv = torch.linalg.svdvals(w @ s)
    # The output error is exactly the discarded energy of W·S ...
    torch.testing.assert_close(err, sv[rank:].pow(2).sum(), rtol=1e-8, atol=0.0)
    # ... which is the optimum, reached also by the symmetric-root construction.
    ref = symmetric_sqrt_reference(w, gram, rank)
    err_ref = ((w - ref) @ x.T).pow(2).sum()
    torch.testing.assert_close(err, err_ref, rtol=1e-8, atol=0.0)
    torch.testing.assert_close(b @ a, ref, rtol=1e-6, atol=1e-8)
    # Plain SVD minimises the weight error instead, so its output error is no better.
    pa, pb = plain_factors(w, rank)
    err_plain = ((w - pb @ pa) @ x.T).pow(2).sum()
    assert err <= err_plain * (1 + 1e-12)
    assert err < 0.9 * err_plain  # correlated inputs: whitening clearly helps
    weight_err = (w - pb @ pa).pow(2).sum()
    torch.testing.assert_close(
        weight_err, torch.linalg.svdvals(w)[rank:].pow(2).sum(), rtol=1e-8, atol=0.0
    )


def test_full_rank_factors_reproduce_the_weight() -> None:
    torch.manual_seed(2)
    w = torch.randn(20, 30, dtype=F64)
    x = correlated_inputs(100, 30)
    a, b = whitened_factors(w, x.T @ x, 20, damping=1e-3)
    torch.testing.assert_close(b @ a, w, rtol=0, atol=1e-9)
    pa, pb = plain_factors(w, 20)
    torch.testing.assert_close(pb @ pa, w, rtol=0, atol=1e-10)


def test_damping_is_relative_to_the_mean_diagonal() -> None:
    x = correlated_inputs(50, 16)
    gram = x.T @ x
    s = cholesky_whitener(gram, 0.1)
    expected = gram + 0.1 * gram.diagonal().mean() * torch.eye(16, dtype=F64)
    torch.testing.assert_close(s @ s.T, expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(s, s.tril())


def test_rank_deficient_gram_still_factorises() -> None:
    x = correlated_inputs(5, 16)  # 5 tokens: Gram of rank 5 in 16 dimensions
    s = cholesky_whitener(x.T @ x, 0.0)
    assert torch.isfinite(s).all()
    a, b = whitened_factors(torch.randn(8, 16, dtype=F64), x.T @ x, 4, damping=0.0)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


@pytest.mark.parametrize("bias", [False, True])
def test_lowrank_linear_at_full_rank_matches_the_linear(bias: bool) -> None:
    torch.manual_seed(3)
    dense = nn.Linear(24, 16, bias=bias, dtype=F64)
    a, b = plain_factors(dense.weight.detach(), 16)
    low = LowRankLinear(24, 16, 16, bias, dtype=F64)
    with torch.no_grad():
        low.first.weight.copy_(a)
        low.second.weight.copy_(b)
        if bias:
            low.second.bias.copy_(dense.bias)
    assert low.first.bias is None and (low.second.bias is not None) == bias
    x = torch.randn(3, 5, 24, dtype=F64)
    torch.testing.assert_close(low(x), dense(x), rtol=0, atol=1e-12)
    assert count_parameters(low) == 16 * 40 + (16 if bias else 0)
    assert "rank=16" in repr(low)


def test_find_linears_in_llama_excludes_head_and_embeddings() -> None:
    model = tiny_llama()
    found = find_linears(model, ["q_proj", "k_proj", "v_proj", "o_proj", "lm_head", "down_proj"])
    assert len(found) == 2 * 5
    assert all(n.startswith("model.layers.") for n in found)
    assert "lm_head" not in found
    shapes = {s.name: s for s in linear_shapes(model, ["k_proj", "gate_proj"])}
    k = shapes["model.layers.1.self_attn.k_proj"]
    assert (k.in_features, k.out_features, k.bias) == (64, 32, False)
    assert shapes["model.layers.0.mlp.gate_proj"].out_features == 128


def test_qwen2_shapes_have_biases() -> None:
    shapes = {s.name: s for s in linear_shapes(tiny_qwen2(), ["q_proj", "o_proj"])}
    assert shapes["model.layers.0.self_attn.q_proj"].bias
    assert not shapes["model.layers.0.self_attn.o_proj"].bias


def test_gpt2_conv1d_is_found_with_out_by_in_weights() -> None:
    model = tiny_gpt2()
    found = find_linears(model, ["c_attn", "c_proj", "c_fc"])
    assert len(found) == 2 * 4  # attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
    c_attn = found["transformer.h.0.attn.c_attn"]
    assert dense_weight(c_attn).shape == (192, 64)  # Conv1D stores 64 x 192
    x = torch.randn(2, 64)
    torch.testing.assert_close(c_attn(x), x @ dense_weight(c_attn).T + c_attn.bias)


def test_set_module_and_count_parameters_with_tied_weights() -> None:
    model = tiny_llama()
    # Tied embeddings are counted once: 256 x 64, not twice.
    linears = sum(
        m.weight.numel()
        for m in find_linears(
            model, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        ).values()
    )
    norms = (2 * 2 + 1) * 64
    assert count_parameters(model) == linears + 256 * 64 + norms
    low = LowRankLinear(64, 64, 8, False)
    set_module(model, "model.layers.0.self_attn.q_proj", low)
    assert model.model.layers[0].self_attn.q_proj is low
    assert count_parameters(model) == linears + 256 * 64 + norms - 64 * 64 + 8 * 128
