"""A decoder model's shape as numbers, its parameter count, and the shapes near a target.

Pure arithmetic (no torch): the planner and the API use it. ``Arch.params()`` must equal the
unique parameter count of the model with that shape; the tests check it against real models of
every supported architecture before and after pruning.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["AXES", "Arch", "Candidate", "arch_from_config", "axis_widths", "candidate_shapes"]

# The axes pruning can shrink, in the order the families of shapes are described.
AXES = ("depth", "heads", "mlp", "hidden", "experts")


@dataclass(frozen=True)
class Arch:
    """The axes pruning changes, plus the fixed facts that decide how parameters scale."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    layers: int
    head_dim: int
    vocab: int
    tied: bool = True
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    gated: bool = True  # gate/up/down (3 matrices) or fc1/fc2 (2)
    norm_params: int = 1  # per channel: 1 (RMSNorm weight) or 2 (LayerNorm weight + bias)
    norms_per_layer: int = 2
    lm_head_bias: bool = False
    experts: int = 0  # 0: a dense MLP; otherwise routed experts of width ``intermediate``
    experts_per_tok: int = 0  # experts each token is routed to (top-k), fixed by pruning

    @property
    def heads_per_group(self) -> int:
        """Query heads sharing one key/value head (GQA)."""
        return self.heads // self.kv_heads

    def layer_params(self) -> int:
        """Parameters of one decoder block."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = h * (q + 2 * kv) + q * h
        attn += (q + 2 * kv) * self.qkv_bias + h * self.o_bias
        mats = 3 if self.gated else 2
        mlp = mats * h * self.intermediate
        if self.mlp_bias:
            mlp += (mats - 1) * self.intermediate + h
        if self.experts:  # every expert is an MLP; the router is one [experts, hidden] matrix
            mlp = self.experts * mlp + self.experts * h
        return attn + mlp + self.norms_per_layer * self.norm_params * h

    def params(self) -> int:
        """Unique parameters of the whole model (tied embeddings counted once)."""
        emb = self.vocab * self.hidden
        head = 0 if self.tied else self.vocab * self.hidden
        head += self.vocab * self.lm_head_bias
        return emb + head + self.norm_params * self.hidden + self.layers * self.layer_params()

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    """A shape within tolerance of the target, and how far from it (relative)."""

    arch: Arch
    params: int
    error: float

    def describe(self) -> dict[str, int | float]:
        """The axes a user sees in the job's events."""
        a = self.arch
        out: dict[str, int | float] = {
            "hidden_size": a.hidden,
            "intermediate_size": a.intermediate,
            "num_attention_heads": a.heads,
            "num_key_value_heads": a.kv_heads,
            "num_hidden_layers": a.layers,
        }
        if a.experts:
            out["num_local_experts"] = a.experts
        return {**out, "params": self.params, "target_error": round(self.error, 6)}


def axis_widths(full: int, multiple: int, allowed: bool, floor: int) -> list[int]:
    """``full`` and every multiple of ``multiple`` below it down to ``floor`` (if allowed)."""
    if not allowed:
        return [full]
    below = range((full - 1) // multiple * multiple, max(floor, multiple) - 1, -multiple)
    return [full, *below]


def candidate_shapes(
    arch: Arch,
    target_params: int,
    *,
    axes: Iterable[str],
    hidden_multiple: int = 64,
    mlp_multiple: int = 32,
    min_layers: int = 1,
    tolerance: float = 0.01,
) -> list[Candidate]:
    """Every homogeneous shape along ``axes`` ({"depth", "heads", "mlp", "hidden", "experts"})
    whose count is within ``tolerance`` of ``target_params``, nearest first.

    Hidden sizes are multiples of ``hidden_multiple`` (or the original), query heads a multiple
    of the KV heads (whole GQA groups keep the same count), expert counts (mixture-of-experts
    models) at least the experts each token uses. With "mlp" the MLP width is solved for the
    target (rounded to ``mlp_multiple`` both ways) for each combination of the others, so the
    grid lands on the target; without it, only combinations that happen to land count.
    Mixture-of-experts widths are also multiples of 8, which fused expert kernels require.
    """
    axes = set(axes)
    if arch.experts:  # grouped-matmul expert kernels need 16-byte strides (8 bf16 values)
        mlp_multiple = math.lcm(mlp_multiple, 8)
        hidden_multiple = math.lcm(hidden_multiple, 8)
    unknown = axes - set(AXES)
    if unknown:
        raise ValueError(f"unknown pruning axes {sorted(unknown)}")
    hiddens = axis_widths(arch.hidden, hidden_multiple, "hidden" in axes, arch.hidden // 4)
    groups = range(arch.heads_per_group, 0, -1) if "heads" in axes else [arch.heads_per_group]
    depths = range(arch.layers, min_layers - 1, -1) if "depth" in axes else [arch.layers]
    experts = [arch.experts]
    if "experts" in axes and arch.experts:
        experts = list(range(arch.experts, max(1, arch.experts_per_tok) - 1, -1))
    found: dict[Arch, Candidate] = {}
    for hidden, per_group, layers, n_experts in itertools.product(hiddens, groups, depths, experts):
        base = replace(
            arch, hidden=hidden, heads=per_group * arch.kv_heads, layers=layers, experts=n_experts
        )
        widths = [arch.intermediate]
        if "mlp" in axes:
            widths = _solve_mlp(base, target_params, mlp_multiple)
        for width in widths:
            shape = replace(base, intermediate=width)
            params = shape.params()
            error = params / target_params - 1.0
            if abs(error) <= tolerance and shape != arch:
                found[shape] = Candidate(shape, params, error)
    return sorted(found.values(), key=lambda c: (abs(c.error), -c.params))


def _solve_mlp(base: Arch, target: int, multiple: int) -> list[int]:
    """MLP widths (multiples of ``multiple``, at most the original) nearest to the target."""
    one = replace(base, intermediate=1).params() - replace(base, intermediate=0).params()
    if one <= 0:
        return []
    exact = (target - replace(base, intermediate=0).params()) / one
    lo = math.floor(exact / multiple) * multiple
    return [w for w in (lo, lo + multiple) if multiple <= w <= base.intermediate]


# Model types whose config.json alone describes the shape (norms per block, biases).
_NORMS_PER_LAYER = {"gemma2": 4, "phi": 1}
_CONFIG_TYPES = {"llama", "mistral", "qwen2", "gemma", "gemma2", "phi", "mixtral"}


def arch_from_config(config: Mapping[str, Any], total_params: int) -> Arch | None:
    """The :class:`Arch` a transformers ``config.json`` describes, if it has exactly
    ``total_params`` parameters (the count read from the checkpoint); None for model types
    not listed here or when the count disagrees, so a caller never plans on a wrong shape.

    Lets the API check a ``minitron`` target at submit time without loading the model.
    """
    model_type = config.get("model_type")
    if model_type not in _CONFIG_TYPES:
        return None
    try:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        base = Arch(
            hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            heads=heads,
            kv_heads=kv_heads,
            layers=int(config["num_hidden_layers"]),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab=int(config["vocab_size"]),
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    phi = model_type == "phi"
    attention_bias = bool(config.get("attention_bias", False))
    experts = int(config.get("num_local_experts") or 0) if model_type == "mixtral" else 0
    shaped = replace(
        base,
        qkv_bias=phi or attention_bias or model_type == "qwen2",
        o_bias=phi or attention_bias,
        mlp_bias=phi or bool(config.get("mlp_bias", False)),
        gated=not phi,
        norm_params=2 if phi else 1,
        norms_per_layer=_NORMS_PER_LAYER.get(str(model_type), 2),
        lm_head_bias=phi,
        experts=experts,
        experts_per_tok=int(config.get("num_experts_per_tok") or 0) if experts else 0,
    )
    # Whether the head is tied depends on per-type defaults a config.json may leave out: the
    # checkpoint's count decides.
    for tied in (True, False):
        arch = replace(shaped, tied=tied)
        if arch.params() == total_params:
            return arch
    return None
