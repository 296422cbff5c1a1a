"""Cut a dense decoder model down to a smaller homogeneous shape, in place.

Every block keeps the same widths, so the result is a standard config (hidden_size,
intermediate_size, num_attention_heads, num_hidden_layers, explicit head_dim) that stock
transformers loads. Which units stay comes from
:class:`~slimforge.compression.pruning.importance.Importance`
of the original model: the most important within each block (MLP neurons; query heads inside
each GQA group; experts by routing weight, then each expert's own neurons) or over the whole
model (hidden channels), kept in their original order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimforge.compression.pruning.arch import Arch
from slimforge.compression.pruning.importance import Importance
from slimforge.compression.pruning.layout import ExpertsLayout, ModelLayout, arch_of, model_layout

__all__ = ["choose_layers", "prune_model", "top_indices"]


def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in increasing index order (ties: lower index)."""
    order = torch.argsort(scores.double(), descending=True, stable=True)
    return order[:k].sort().values


def choose_layers(scores: torch.Tensor, keep: int, *, contiguous: bool) -> list[int]:
    """Which of the blocks to keep, given their importance: the ``keep`` most important, or
    (``contiguous``) all but the window of blocks with the least total importance, never the
    first or last block (Minitron and ShortGPT both find the ends matter most)."""
    n = scores.numel()
    drop = n - keep
    if drop <= 0:
        return list(range(n))
    if not contiguous or n - drop < 2:
        return top_indices(scores, keep).tolist()
    best = min(range(1, n - drop), key=lambda s: (float(scores[s : s + drop].sum()), -s))
    return [i for i in range(n) if not best <= i < best + drop]


def _rows(linear: nn.Linear, keep: torch.Tensor) -> None:
    """Keep output features ``keep`` (weight rows and bias entries)."""
    linear.weight = nn.Parameter(linear.weight.data[keep].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.data[keep].clone())
    linear.out_features = int(keep.numel())


def _cols(linear: nn.Linear, keep: torch.Tensor) -> None:
    """Keep input features ``keep`` (weight columns)."""
    linear.weight = nn.Parameter(linear.weight.data[:, keep].clone())
    linear.in_features = int(keep.numel())


def _norm(norm: nn.Module, keep: torch.Tensor) -> None:
    for name in ("weight", "bias"):
        p = getattr(norm, name, None)
        if isinstance(p, torch.Tensor):
            setattr(norm, name, nn.Parameter(p.data[keep].clone()))
    if isinstance(norm, nn.LayerNorm):
        norm.normalized_shape = (int(keep.numel()),)


def _experts(moe: ExpertsLayout, keep_e: torch.Tensor, neurons: torch.Tensor | None) -> None:
    """Keep experts ``keep_e`` (router rows and expert weights) and, if given, each kept
    expert's own neurons ``neurons[j]`` (for the j-th kept expert)."""
    router, ex = moe.router, moe.experts
    width = moe.width
    gate_up, down = ex.gate_up_proj.data[keep_e], ex.down_proj.data[keep_e]
    if neurons is not None:  # gate rows [0, width), up rows [width, 2 * width)
        rows = torch.cat([neurons, neurons + width], dim=1)  # [kept, 2 * new width]
        gate_up = torch.stack([g[r] for g, r in zip(gate_up, rows, strict=True)])
        down = torch.stack([d[:, n] for d, n in zip(down, neurons, strict=True)])
        ex.intermediate_dim = int(neurons.shape[1])
    ex.gate_up_proj = nn.Parameter(gate_up.clone())
    ex.down_proj = nn.Parameter(down.clone())
    router.weight = nn.Parameter(router.weight.data[keep_e].clone())
    for module in (router, ex):  # modules that cache the count use it in forward
        if isinstance(getattr(module, "num_experts", None), int):
            module.num_experts = int(keep_e.numel())


def _experts_hidden(moe: ExpertsLayout, keep: torch.Tensor) -> None:
    """Keep hidden channels ``keep`` in the router and every expert."""
    router, ex = moe.router, moe.experts
    router.weight = nn.Parameter(router.weight.data[:, keep].clone())
    ex.gate_up_proj = nn.Parameter(ex.gate_up_proj.data[:, :, keep].clone())
    ex.down_proj = nn.Parameter(ex.down_proj.data[:, keep, :].clone())
    for module in (router, ex):
        if isinstance(getattr(module, "hidden_dim", None), int):
            module.hidden_dim = int(keep.numel())


def _rescale_embedding(lay: ModelLayout, old: int, new: int) -> None:
    """Keep a hidden-size-scaled embedding (Gemma multiplies it by sqrt(hidden_size), a buffer
    rebuilt from the config on load) computing the same: weights x sqrt(old / new) so the
    reloaded sqrt(new) factor gives what sqrt(old) gave, and the final norm's gain / that
    factor so tied logits are unchanged."""
    embed: Any = lay.embed  # a transformers scaled embedding (embed_scale buffer)
    if not isinstance(getattr(embed, "embed_scale", None), torch.Tensor):
        return
    scale = math.sqrt(old / new)
    embed.weight.data.mul_(scale)
    embed.embed_scale.fill_(math.sqrt(new))
    if hasattr(embed, "scalar_embed_scale"):
        embed.scalar_embed_scale = math.sqrt(new)
    if lay.lm_head.weight is not embed.weight:
        return  # an untied head does not see the embedding
    norm, weight = lay.final_norm, getattr(lay.final_norm, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError("cannot rescale a final norm without a gain for a scaled embedding")
    offset = _gain_offset(norm)
    weight.data.copy_((offset + weight.data) / scale - offset)


@torch.no_grad()
def _gain_offset(norm: nn.Module) -> float:
    """1.0 for norms that multiply by (1 + weight) (Gemma), 0.0 for those that multiply by
    weight, found by probing the norm with a unit-RMS input."""
    weight = getattr(norm, "weight")  # noqa: B009 - the caller checked it
    probe = torch.ones(1, weight.numel(), dtype=weight.dtype, device=weight.device)
    out = norm(probe)[0]
    if torch.allclose(out, weight, rtol=1e-3, atol=1e-4):
        return 0.0
    if torch.allclose(out, 1.0 + weight, rtol=1e-3, atol=1e-4):
        return 1.0
    raise ValueError(f"cannot tell how {type(norm).__name__} applies its weight")


def _head_units(keep_heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Feature indices [heads * head_dim] of the kept heads."""
    return (keep_heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def _prune_moe(moe: ExpertsLayout, i: int, shape: Arch, full: Arch, imp: Importance) -> None:
    """Block ``i``'s experts: keep the most-routed ``shape.experts`` (router statistics), then
    each kept expert's own most important neurons."""
    if imp.experts is None:
        raise ValueError("a mixture-of-experts model needs expert importance")
    if shape.experts == full.experts and shape.intermediate == full.intermediate:
        return
    keep_e = top_indices(imp.experts[i], shape.experts)
    neurons = None
    if shape.intermediate < full.intermediate:
        neurons = torch.stack([top_indices(imp.neurons[i, e], shape.intermediate) for e in keep_e])
    _experts(moe, keep_e, neurons)


def prune_model(
    model: nn.Module, shape: Arch, importance: Importance, *, layers: Sequence[int]
) -> None:
    """Prune ``model`` (the original the importance was measured on) to ``shape`` in place,
    keeping the blocks ``layers`` (original indices, ``shape.layers`` of them), and update its
    config so ``save_pretrained`` writes a standard, loadable checkpoint."""
    full = arch_of(model)
    if len(layers) != shape.layers:
        raise ValueError(f"{len(layers)} layers given for a {shape.layers}-layer shape")
    if shape.kv_heads != full.kv_heads or shape.heads % shape.kv_heads:
        raise ValueError("query heads are pruned per KV group: keep every KV head")
    lay = model_layout(model)
    cfg: Any = getattr(model, "config")  # noqa: B009 - a transformers model
    hd, groups, per_group = full.head_dim, full.kv_heads, full.heads_per_group
    keep_per_group = shape.heads // shape.kv_heads
    keep_hidden = top_indices(importance.hidden, shape.hidden)
    for i in layers:
        b = lay.blocks[i]
        if keep_per_group < per_group:
            scores = importance.heads[i].view(groups, per_group)
            kept = torch.cat(
                [g * per_group + top_indices(scores[g], keep_per_group) for g in range(groups)]
            )
            units = _head_units(kept, hd)
            _rows(b.q, units)
            _cols(b.o, units)
        if b.moe is not None:
            _prune_moe(b.moe, i, shape, full, importance)
        elif shape.intermediate < full.intermediate:
            assert b.down is not None
            neurons = top_indices(importance.neurons[i], shape.intermediate)
            for lin in (b.up, b.gate):
                if lin is not None:
                    _rows(lin, neurons)
            _cols(b.down, neurons)
        if shape.hidden < full.hidden:
            for lin in (b.q, b.k, b.v, b.up, b.gate):
                if lin is not None:
                    _cols(lin, keep_hidden)
            for lin in (b.o, b.down):
                if lin is not None:
                    _rows(lin, keep_hidden)
            if b.moe is not None:
                _experts_hidden(b.moe, keep_hidden)
            for norm in b.norms:
                _norm(norm, keep_hidden)
        for attr in ("num_heads", "num_attention_heads"):  # attention modules that cache counts
            attn = b.block.self_attn
            if isinstance(getattr(attn, attr, None), int):
                setattr(attn, attr, shape.heads)
        if hasattr(b.block.self_attn, "num_key_value_groups"):
            b.block.self_attn.num_key_value_groups = keep_per_group
    if shape.hidden < full.hidden:
        lay.embed.weight = nn.Parameter(lay.embed.weight.data[:, keep_hidden].clone())
        lay.embed.embedding_dim = shape.hidden
        _norm(lay.final_norm, keep_hidden)
        if shape.tied:
            lay.lm_head.weight = lay.embed.weight
            lay.lm_head.in_features = shape.hidden
        else:
            _cols(lay.lm_head, keep_hidden)
        _rescale_embedding(lay, full.hidden, shape.hidden)
    if len(layers) < len(lay.blocks):
        kept_layers = [lay.layers[i] for i in layers]
        base: Any = getattr(model, "model")  # noqa: B009 - model_layout found it
        base.layers = nn.ModuleList(kept_layers)
        for j, block in enumerate(kept_layers):  # the KV cache is indexed by position
            for module in block.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    setattr(module, "layer_idx", j)  # noqa: B010
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = [cfg.layer_types[i] for i in layers]
    cfg.hidden_size = shape.hidden
    cfg.intermediate_size = shape.intermediate
    cfg.num_attention_heads = shape.heads
    cfg.num_key_value_heads = shape.kv_heads
    cfg.num_hidden_layers = shape.layers
    cfg.head_dim = hd  # explicit: heads x head_dim no longer equals hidden_size
    if shape.experts:
        cfg.num_local_experts = shape.experts
    if arch_of(model) != shape:
        raise AssertionError(f"pruned to {arch_of(model)}, expected {shape}")
