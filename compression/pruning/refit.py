"""Least-squares refit of a pruned MLP's down projection (training-free).

Removing MLP neurons drops their share of the block's output. The kept neurons can make up
for much of it: their activations are correlated with the removed ones. With H the down
projection's input on calibration text ([tokens, intermediate], the original model's) and W its
weight [hidden, intermediate], the kept columns K get the weight that reproduces the original
output best in the least-squares sense,

    W_K' = argmin_V ||H_K Vᵀ - H Wᵀ||² + λ||V - W_K||²  =  (W G_{:,K} + λ W_K) (G_KK + λI)⁻¹,

with G = HᵀH, solved from the Gram matrix alone (He, Zhang & Sun, "Channel Pruning for
Accelerating Very Deep Neural Networks", ICCV 2017, §3.1: least-squares reconstruction after
channel selection). The Tikhonov term pulls the solution toward the kept columns' original
weights W_K, not toward zero: λ = ``ridge`` x mean diag(G_KK) keeps rarely active neurons from
blowing up, and a large ``ridge`` gives back the plain pruned weights (no refit), so the term
also limits how far the refit fits the calibration text's domain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from slimforge.compression.pruning.arch import Arch
from slimforge.compression.pruning.importance import Importance
from slimforge.compression.pruning.layout import arch_of, model_layout
from slimforge.compression.pruning.prune import top_indices

__all__ = ["RIDGE", "apply_refit", "down_projection_names", "refit_down_weights"]

RIDGE = 1e-3


def down_projection_names(model: nn.Module) -> list[str]:
    """Module names of every dense block's down projection (what the refit needs Grams of)."""
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(b.down)] for b in model_layout(model).blocks if b.down is not None]


def refit_weight(
    weight: torch.Tensor, gram: torch.Tensor, keep: torch.Tensor, ridge: float = RIDGE
) -> torch.Tensor:
    """The refit down weight [hidden, len(keep)] from the original ``weight`` [hidden,
    intermediate] and the input Gram ``gram`` [intermediate, intermediate] (float64)."""
    g = gram.double()
    g_kk = g[keep][:, keep]
    reg = ridge * g_kk.diagonal().mean().clamp_min(1e-12)
    w = weight.double().T.to(g.device)  # [intermediate, hidden]
    rhs = g[keep] @ w + reg * w[keep]  # [k, hidden]
    eye = torch.eye(len(keep), dtype=g.dtype, device=g.device)
    solved = torch.linalg.solve(g_kk + reg * eye, rhs)
    return solved.T.to(weight.dtype).to(weight.device)


@torch.no_grad()
def refit_down_weights(
    model: nn.Module,
    grams: Mapping[str, torch.Tensor],
    importance: Importance,
    shape: Arch,
    layers: Sequence[int],
    *,
    ridge: float = RIDGE,
) -> dict[int, torch.Tensor]:
    """For each kept block (original index) whose MLP ``shape`` narrows: its refit down weight
    [hidden, shape.intermediate], computed on the unpruned ``model`` with the neurons
    :func:`~slimforge.compression.pruning.prune.prune_model` keeps. Empty when the MLP keeps
    its width, for mixtures of experts, and when the hidden size shrinks (the kept neurons'
    inputs then change, so the original activations no longer describe them)."""
    full_width = model_layout(model).blocks[0].down
    if full_width is None or shape.hidden != arch_of(model).hidden:
        return {}
    if shape.intermediate >= full_width.in_features:
        return {}
    names = down_projection_names(model)  # by block index
    out = {}
    for i in layers:
        down = model_layout(model).blocks[i].down
        assert down is not None
        keep = top_indices(importance.neurons[i], shape.intermediate)
        out[i] = refit_weight(down.weight, grams[names[i]], keep, ridge)
    return out


def apply_refit(
    model: nn.Module, weights: Mapping[int, torch.Tensor], layers: Sequence[int]
) -> None:
    """Set the pruned ``model``'s down weights from :func:`refit_down_weights` (keyed by the
    original block index; ``layers`` are the kept blocks, in order)."""
    blocks = model_layout(model).blocks
    for j, i in enumerate(layers):
        if i in weights:
            down = blocks[j].down
            assert down is not None and down.weight.shape == weights[i].shape
            down.weight = nn.Parameter(weights[i].clone())
