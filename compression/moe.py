"""Mixture-of-experts layers as one Linear per expert, so low-rank methods can factorise them.

transformers 5 stores Mixtral's experts fused: ``gate_up_proj`` [E, 2I, H] and ``down_proj``
[E, H, I] parameters inside one ``MixtralExperts`` module, not as Linear layers. Before planning,
:func:`split_fused_experts` swaps each such module for :class:`SplitExperts`, which holds the
same weights as ``experts.<e>.gate_up_proj`` / ``experts.<e>.down_proj`` Linears and computes
the same thing (up to float rounding: the fused module may use a grouped-matmul kernel).
Every expert matrix then is an ordinary Linear to the planner, the Gram hooks (which see only
the tokens routed to that expert) and the exporter.

``SplitExperts`` is also shipped, by source, inside exported artifacts (see ``export.py``), so
its class body must only use ``torch``/``nn``/``F``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FUSED_EXPERT_CLASSES", "Expert", "SplitExperts", "split_fused_experts"]

# Fused expert modules whose forward SplitExperts reproduces (top-k routing, SwiGLU experts,
# gate and up stacked in gate_up_proj, no biases).
FUSED_EXPERT_CLASSES = {"MixtralExperts"}


class Expert(nn.Module):
    """One SwiGLU expert: ``gate_up_proj`` (H -> 2I, gate then up) and ``down_proj`` (I -> H)."""

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.gate_up_proj: nn.Module = nn.Linear(
            hidden_size, 2 * intermediate_size, bias=False, device=device, dtype=dtype
        )
        self.down_proj: nn.Module = nn.Linear(
            intermediate_size, hidden_size, bias=False, device=device, dtype=dtype
        )


class SplitExperts(nn.Module):
    """Experts as ``experts[e].gate_up_proj`` (H -> 2I) and ``experts[e].down_proj`` (I -> H)."""

    def __init__(
        self,
        num_experts: int,
        hidden_size: int,
        intermediate_size: int,
        act_fn: nn.Module,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            Expert(hidden_size, intermediate_size, device=device, dtype=dtype)
            for _ in range(num_experts)
        )
        self.act_fn = act_fn

    @classmethod
    def like(cls, fused: nn.Module, *, copy_weights: bool = True) -> SplitExperts:
        """A SplitExperts shaped like the fused module (with its weights, unless told)."""
        gate_up, down = fused.gate_up_proj, fused.down_proj  # [E, 2I, H], [E, H, I]
        assert isinstance(gate_up, torch.Tensor) and isinstance(down, torch.Tensor)
        num, hidden = gate_up.shape[0], gate_up.shape[2]
        split = cls(
            num,
            hidden,
            gate_up.shape[1] // 2,
            fused.act_fn,  # type: ignore[arg-type]
            device=gate_up.device,
            dtype=gate_up.dtype,
        )
        if copy_weights:
            with torch.no_grad():
                for e, expert in enumerate(split.experts):
                    expert.gate_up_proj.weight.copy_(gate_up[e])  # type: ignore[union-attr,operator]
                    expert.down_proj.weight.copy_(down[e])  # type: ignore[union-attr,operator]
        return split

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        # hidden_states [tokens, H]; top_k_index / top_k_weights [tokens, k]
        final = torch.zeros_like(hidden_states)
        n = len(self.experts)
        with torch.no_grad():
            mask = F.one_hot(top_k_index, num_classes=n + 1).permute(2, 1, 0)  # [E+1, k, tokens]
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for row in hit:
            e = int(row[0])
            if e == n:  # index n marks dropped tokens
                continue
            top_k_pos, token_idx = torch.where(mask[e])
            expert: Expert = self.experts[e]  # type: ignore[assignment]
            gate, up = expert.gate_up_proj(hidden_states[token_idx]).chunk(2, dim=-1)
            out = expert.down_proj(self.act_fn(gate) * up)
            out = out * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, out.to(final.dtype))
        return final


def split_fused_experts(model: nn.Module) -> list[str]:
    """Replace every fused experts module of a known class by a :class:`SplitExperts` holding
    the same weights (in place; outputs unchanged). Returns the paths of all split modules,
    including those split earlier, so the call is idempotent."""
    paths = []
    for name, module in list(model.named_modules()):
        if isinstance(module, SplitExperts):
            paths.append(name)
        elif type(module).__name__ in FUSED_EXPERT_CLASSES:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, SplitExperts.like(module))
            paths.append(name)
    return paths
