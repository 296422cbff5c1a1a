"""Activation-based importance (Minitron), from forward passes only.

Per calibration sequence, each quantity is averaged over the sequence (mean |·|), then the
per-sequence values are combined by L2 over sequences, the "(L2, mean)" aggregation the paper
found best:

- attention heads: the norm of each head's output (the input of the output projection);
- MLP neurons: the activation entering the down projection (for a mixture of experts, per
  expert, counting the tokens routed to it; other tokens contribute zero);
- experts: the mean routing weight each expert receives per token (router statistics);
- hidden channels: the outputs of every norm layer, summed over layers;
- layers: Block Importance 1 - mean cos(input, output) of each block (ShortGPT), or the
  perplexity increase when the block alone is removed (:func:`layer_removal_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimforge.compression.evaluation import perplexity
from slimforge.compression.progress import NullReporter, Reporter
from slimforge.compression.pruning.layout import arch_of, model_layout

__all__ = ["Importance", "layer_removal_scores", "measure_importance"]


@dataclass
class Importance:
    """Scores of every prunable unit of the original model (higher = keep)."""

    heads: torch.Tensor  # [layers, heads]
    neurons: torch.Tensor  # [layers, intermediate], or [layers, experts, intermediate]
    hidden: torch.Tensor  # [hidden]
    layers: torch.Tensor  # [layers]
    experts: torch.Tensor | None = None  # [layers, experts] for a mixture of experts


def _output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


@torch.no_grad()
def measure_importance(
    model: nn.Module,
    blocks: torch.Tensor,
    *,
    batch_size: int = 4,
    reporter: Reporter | None = None,
) -> Importance:
    """Forward ``blocks`` [n, t] through ``model`` and score heads, neurons, channels, layers."""
    reporter = reporter or NullReporter()
    lay = model_layout(model)
    n_layers = len(lay.blocks)
    arch = arch_of(model)
    head_dim, n_heads = arch.head_dim, arch.heads
    heads = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    moe = arch.experts > 0
    width = arch.intermediate
    neurons = torch.zeros(
        (n_layers, arch.experts, width) if moe else (n_layers, width), dtype=torch.float64
    )
    routed = torch.zeros(n_layers, arch.experts, dtype=torch.float64)
    batch_shape: list[tuple[int, int]] = [(0, 0)]  # [b, t] of the current forward
    norm_modules = [nm for b in lay.blocks for nm in b.norms] + [lay.final_norm]
    hidden_sq = torch.zeros(len(norm_modules), lay.embed.embedding_dim, dtype=torch.float64)
    cos_sum = torch.zeros(n_layers, dtype=torch.float64)
    tokens = 0
    hooks = []

    def on_o(i: int) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].float()  # [b, t, heads * head_dim]
            per_head = x.view(*x.shape[:-1], n_heads, head_dim).norm(dim=-1)  # [b, t, heads]
            heads[i] += per_head.mean(dim=1).double().pow(2).sum(dim=0).cpu()

        return hook

    def on_down(i: int) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            a = args[0].float().abs().mean(dim=1)  # [b, intermediate]
            neurons[i] += a.double().pow(2).sum(dim=0).cpu()

        return hook

    def on_moe(_m: nn.Module, args: tuple[Any, ...]) -> None:
        batch_shape[0] = tuple(args[0].shape[:2])  # the experts only see flattened tokens

    def on_experts(i: int) -> Any:
        def hook(m: Any, args: tuple[Any, ...]) -> None:  # m: the fused experts module
            x, index, weights = args[0].float(), args[1], args[2].float()  # [N, h], [N, k] x2
            b, t = batch_shape[0]
            for e in range(m.gate_up_proj.shape[0]):
                hit = index == e  # [N, k]
                routed[i, e] += (weights * hit).sum().double().cpu()
                tokens_e = hit.any(dim=-1)  # [N]
                if not bool(tokens_e.any()):
                    continue
                gate, up = F.linear(x[tokens_e], m.gate_up_proj[e].float()).chunk(2, dim=-1)
                a = torch.zeros(x.shape[0], width, device=x.device)
                a[tokens_e] = (m.act_fn(gate) * up).abs()
                per_seq = a.view(b, t, width).mean(dim=1)  # [b, width]
                neurons[i, e] += per_seq.double().pow(2).sum(dim=0).cpu()

        return hook

    def on_norm(j: int) -> Any:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            a = _output(out).float().abs().mean(dim=1)  # [b, hidden]
            hidden_sq[j] += a.double().pow(2).sum(dim=0).cpu()

        return hook

    def on_block(i: int) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            cos = F.cosine_similarity(x.float(), _output(out).float(), dim=-1)  # [b, t]
            cos_sum[i] += cos.double().sum().cpu()

        return hook

    for i, b in enumerate(lay.blocks):
        hooks.append(b.o.register_forward_pre_hook(on_o(i)))
        if b.moe is not None:
            mlp = getattr(b.block, "mlp")  # noqa: B009 - model_layout found it
            hooks.append(mlp.register_forward_pre_hook(on_moe))
            hooks.append(b.moe.experts.register_forward_pre_hook(on_experts(i)))
        else:
            assert b.down is not None
            hooks.append(b.down.register_forward_pre_hook(on_down(i)))
        hooks.append(b.block.register_forward_hook(on_block(i), with_kwargs=True))
    for j, nm in enumerate(norm_modules):
        hooks.append(nm.register_forward_hook(on_norm(j)))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # The decoder alone: the LM head's [b, t, vocab] logits are not needed (a fifth of the
    # compute of a small model with a large vocabulary, such as SmolLM2's 49,152).
    body = getattr(model, "base_model", model)
    try:
        for start in range(0, blocks.shape[0], batch_size):
            reporter.check_cancelled()
            batch = blocks[start : start + batch_size].to(device)
            body(input_ids=batch, use_cache=False)
            tokens += batch.numel()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return Importance(
        heads=heads.sqrt().float(),
        neurons=neurons.sqrt().float(),
        hidden=hidden_sq.sqrt().sum(dim=0).float(),
        layers=(1.0 - cos_sum / max(1, tokens)).float(),
        experts=(routed / max(1, tokens)).float() if moe else None,
    )


@torch.no_grad()
def layer_removal_scores(
    model: nn.Module, blocks: torch.Tensor, *, reporter: Reporter | None = None
) -> torch.Tensor:
    """Perplexity on ``blocks`` with each decoder block removed alone, minus the full model's
    (higher = the block matters more). One evaluation per block: use a few thousand tokens."""
    reporter = reporter or NullReporter()
    lay = model_layout(model)
    base = getattr(model, "model")  # noqa: B009 - model_layout checked it exists
    full = list(lay.layers)
    reference = perplexity(model, blocks)
    scores = torch.zeros(len(full))
    try:
        for i in range(len(full)):
            reporter.check_cancelled()
            base.layers = nn.ModuleList(full[:i] + full[i + 1 :])
            scores[i] = perplexity(model, blocks) - reference
    finally:
        base.layers = lay.layers
    return scores
