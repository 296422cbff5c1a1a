"""Where the prunable pieces of a dense decoder model live, and its shape as an :class:`Arch`.

Covers the Llama layout (Llama, Mistral, Qwen2, Gemma …: q/k/v/o_proj, gate/up/down_proj,
RMSNorms) and the Phi layout (``dense`` output projection, fc1/fc2, LayerNorms with biases).
Anything else raises a ValueError that names what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from compression.pruning.arch import Arch

__all__ = ["BlockLayout", "ModelLayout", "arch_of", "model_layout"]


@dataclass
class BlockLayout:
    """One decoder block's prunable modules."""

    block: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    up: nn.Linear  # up_proj or fc1
    down: nn.Linear  # down_proj or fc2
    gate: nn.Linear | None  # gate_proj of a gated MLP
    norms: list[nn.Module]  # the block's own norms over the hidden size


@dataclass
class ModelLayout:
    """The whole model: embeddings, blocks (a ModuleList), final norm and output head."""

    embed: nn.Embedding
    layers: nn.ModuleList
    blocks: list[BlockLayout]
    final_norm: nn.Module
    lm_head: nn.Linear


def _linear(parent: nn.Module, *names: str) -> nn.Linear | None:
    for name in names:
        m = getattr(parent, name, None)
        if isinstance(m, nn.Linear):
            return m
    return None


def _norms(module: nn.Module, hidden: int) -> list[nn.Module]:
    """Direct children that normalise over the hidden size (RMSNorm, LayerNorm …)."""
    found = []
    for child in module.children():
        weight = getattr(child, "weight", None)
        is_norm = "norm" in type(child).__name__.lower()
        if is_norm and weight is not None and tuple(weight.shape) == (hidden,):
            found.append(child)
    return found


def model_layout(model: nn.Module) -> ModelLayout:
    """The prunable modules of ``model``; ValueError for layouts this pruner does not handle."""
    cfg: Any = getattr(model, "config")  # noqa: B009 - a transformers model
    name = type(model).__name__
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(f"minitron needs a decoder with model.layers; {name} has none")
    hidden = int(cfg.hidden_size)
    blocks = []
    for i, layer in enumerate(layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is None or mlp is None:
            raise ValueError(f"{name} layer {i} has no self_attn/mlp pair")
        q, k, v = (_linear(attn, f"{p}_proj") for p in "qkv")
        o = _linear(attn, "o_proj", "dense")
        up, down = _linear(mlp, "up_proj", "fc1"), _linear(mlp, "down_proj", "fc2")
        gate = _linear(mlp, "gate_proj")
        if None in (q, k, v, o, up, down):
            what = "mixture-of-experts MLP" if hasattr(mlp, "experts") else "module names"
            raise ValueError(
                f"minitron supports dense Llama/Mistral/Qwen2/Gemma/Phi-style blocks; {name} "
                f"layer {i} differs ({what})"
            )
        assert q and k and v and o and up and down
        blocks.append(BlockLayout(layer, q, k, v, o, up, down, gate, _norms(layer, hidden)))
    final = getattr(base, "norm", None) or getattr(base, "final_layernorm", None)
    hf: Any = model  # a transformers PreTrainedModel
    embed, head = hf.get_input_embeddings(), hf.get_output_embeddings()
    if final is None or not isinstance(embed, nn.Embedding) or not isinstance(head, nn.Linear):
        raise ValueError(f"{name}: no final norm, input embedding or output head found")
    return ModelLayout(embed, layers, blocks, final, head)


def arch_of(model: nn.Module) -> Arch:
    """The :class:`Arch` of ``model`` as it is now (homogeneous blocks are required)."""
    lay = model_layout(model)
    b = lay.blocks[0]
    cfg: Any = getattr(model, "config")  # noqa: B009 - a transformers model
    head_dim = int(getattr(cfg, "head_dim", None) or 0)
    if head_dim <= 0:
        head_dim = b.q.out_features // int(cfg.num_attention_heads)
    shapes = {
        (blk.q.out_features, blk.k.out_features, blk.up.out_features, len(blk.norms))
        for blk in lay.blocks
    }
    if len(shapes) != 1:
        raise ValueError("blocks differ in shape; minitron needs homogeneous blocks")
    norm_params = sum(p.numel() for p in lay.final_norm.parameters()) // lay.embed.embedding_dim
    return Arch(
        hidden=lay.embed.embedding_dim,
        intermediate=b.up.out_features,
        heads=b.q.out_features // head_dim,
        kv_heads=b.k.out_features // head_dim,
        layers=len(lay.blocks),
        head_dim=head_dim,
        vocab=lay.embed.num_embeddings,
        tied=lay.lm_head.weight is lay.embed.weight,
        qkv_bias=b.q.bias is not None,
        o_bias=b.o.bias is not None,
        mlp_bias=b.up.bias is not None,
        gated=b.gate is not None,
        norm_params=int(norm_params),
        norms_per_layer=len(b.norms),
        lm_head_bias=lay.lm_head.bias is not None,
    )
