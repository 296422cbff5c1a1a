"""Where the prunable pieces of a dense decoder model live, and its shape as an :class:`Arch`.

Covers the Llama layout (Llama, Mistral, Qwen2, Gemma …: q/k/v/o_proj, gate/up/down_proj,
RMSNorms), the Phi layout (``dense`` output projection, fc1/fc2, LayerNorms with biases) and
Mixtral-style mixtures of experts (a router with a [experts, hidden] weight and the experts'
weights fused as ``gate_up_proj`` [experts, 2 * width, hidden] and ``down_proj``
[experts, hidden, width], as transformers 5 stores them). Anything else raises a ValueError
that names what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimforge.compression.pruning.arch import Arch

__all__ = ["BlockLayout", "ExpertsLayout", "ModelLayout", "arch_of", "model_layout"]


@dataclass
class ExpertsLayout:
    """A Mixtral-style sparse MLP: a top-k router and fused expert weights."""

    # Typed Any: these attributes belong to transformers' classes, not to nn.Module.
    router: Any  # .weight [experts, hidden]
    experts: Any  # .gate_up_proj [experts, 2 * width, hidden], .down_proj [.., hidden, width]

    @property
    def count(self) -> int:
        return int(self.experts.gate_up_proj.shape[0])

    @property
    def width(self) -> int:
        return int(self.experts.down_proj.shape[-1])


@dataclass
class BlockLayout:
    """One decoder block's prunable modules (``up``/``down`` for a dense MLP, ``moe`` else)."""

    block: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    up: nn.Linear | None  # up_proj or fc1
    down: nn.Linear | None  # down_proj or fc2
    gate: nn.Linear | None  # gate_proj of a gated MLP
    norms: list[nn.Module]  # the block's own norms over the hidden size
    moe: ExpertsLayout | None = None

    @property
    def mlp_width(self) -> int:
        """Intermediate size of the MLP (of each expert, for a mixture of experts)."""
        if self.moe is not None:
            return self.moe.width
        assert self.up is not None
        return self.up.out_features


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


def _experts(mlp: nn.Module, hidden: int) -> ExpertsLayout | None:
    """The fused-experts layout of ``mlp``, or None when it is not one this pruner handles."""
    router, experts = getattr(mlp, "gate", None), getattr(mlp, "experts", None)
    if router is None or experts is None or hasattr(mlp, "shared_expert"):
        return None
    weight = getattr(router, "weight", None)
    gate_up = getattr(experts, "gate_up_proj", None)
    down = getattr(experts, "down_proj", None)
    if not all(isinstance(t, torch.Tensor) for t in (weight, gate_up, down)):
        return None
    assert isinstance(weight, torch.Tensor) and isinstance(gate_up, torch.Tensor)
    assert isinstance(down, torch.Tensor)
    n = weight.shape[0]
    width = down.shape[-1]
    if (
        weight.shape != (n, hidden)
        or gate_up.shape != (n, 2 * width, hidden)
        or down.shape != (n, hidden, width)
        or getattr(router, "bias", None) is not None
    ):
        return None
    return ExpertsLayout(router, experts)


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
        moe = _experts(mlp, hidden) if up is None and down is None else None
        if None in (q, k, v, o) or (moe is None and None in (up, down)):
            what = (
                "a mixture-of-experts MLP other than Mixtral's router + fused experts"
                if hasattr(mlp, "experts")
                else "module names"
            )
            raise ValueError(
                f"minitron supports Llama/Mistral/Qwen2/Gemma/Phi-style blocks and "
                f"Mixtral-style experts; {name} layer {i} differs ({what})"
            )
        assert q and k and v and o
        norms = _norms(layer, hidden)
        blocks.append(BlockLayout(layer, q, k, v, o, up, down, gate, norms, moe))
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
        (
            blk.q.out_features,
            blk.k.out_features,
            blk.mlp_width,
            len(blk.norms),
            blk.moe.count if blk.moe else 0,
        )
        for blk in lay.blocks
    }
    if len(shapes) != 1:
        raise ValueError("blocks differ in shape; minitron needs homogeneous blocks")
    norm_params = sum(p.numel() for p in lay.final_norm.parameters()) // lay.embed.embedding_dim
    moe = b.moe
    return Arch(
        hidden=lay.embed.embedding_dim,
        intermediate=b.mlp_width,
        heads=b.q.out_features // head_dim,
        kv_heads=b.k.out_features // head_dim,
        layers=len(lay.blocks),
        head_dim=head_dim,
        vocab=lay.embed.num_embeddings,
        tied=lay.lm_head.weight is lay.embed.weight,
        qkv_bias=b.q.bias is not None,
        o_bias=b.o.bias is not None,
        mlp_bias=b.up is not None and b.up.bias is not None,
        gated=b.gate is not None or moe is not None,
        norm_params=int(norm_params),
        norms_per_layer=len(b.norms),
        lm_head_bias=lay.lm_head.bias is not None,
        experts=moe.count if moe else 0,
        experts_per_tok=int(getattr(cfg, "num_experts_per_tok", 0) or 0) if moe else 0,
    )
