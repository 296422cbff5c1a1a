"""Which sizes a pinned ``minitron`` shape may take, given the model and the job's axes.

A pinned size the search can never produce (5 query heads with 2 key/value heads, more heads
than the model has, a hidden size off the ``hidden_multiple`` grid, an axis left out of
``axes``) is named with a value that works, instead of surfacing as an unreachable target.
Pure arithmetic, no torch: the API runs it at submit, the worker after loading.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from slimforge.compression.parameters import ParameterConflict
from slimforge.compression.pruning.arch import Arch, axis_widths

if TYPE_CHECKING:
    from slimforge.compression.methods.minitron.config import MinitronConfig

__all__ = ["allowed_sizes", "check_pins", "grid_multiples", "pinned_arch"]

# PinnedShape field -> (Arch attribute, axis that changes it, config key of the model).
PINS = {
    "num_hidden_layers": ("layers", "depth"),
    "num_attention_heads": ("heads", "heads"),
    "intermediate_size": ("intermediate", "mlp"),
    "hidden_size": ("hidden", "hidden"),
    "num_local_experts": ("experts", "experts"),
}


def grid_multiples(arch: Arch, config: MinitronConfig) -> tuple[int, int]:
    """(hidden multiple, MLP multiple) of the search: mixture-of-experts widths are also
    multiples of 8, which grouped-matmul expert kernels need (see ``candidate_shapes``)."""
    if arch.experts:
        return math.lcm(config.hidden_multiple, 8), math.lcm(config.mlp_multiple, 8)
    return config.hidden_multiple, config.mlp_multiple


def allowed_sizes(arch: Arch, config: MinitronConfig, field: str) -> list[int]:
    """Every size the search can give the PinnedShape ``field``, largest first."""
    attr, axis = PINS[field]
    full = getattr(arch, attr)
    on = axis in config.axes
    hidden_multiple, mlp_multiple = grid_multiples(arch, config)
    if attr == "layers":
        return list(range(full, 0, -1)) if on else [full]
    if attr == "heads":
        groups = range(arch.heads_per_group, 0, -1) if on else [arch.heads_per_group]
        return [g * arch.kv_heads for g in groups]
    if attr == "hidden":
        return axis_widths(full, hidden_multiple, on, full // 4)
    if attr == "intermediate":
        return axis_widths(full, mlp_multiple, on, mlp_multiple)
    if not full:  # a dense model has no experts to keep
        return []
    return list(range(full, max(1, arch.experts_per_tok) - 1, -1)) if on else [full]


def _reason(arch: Arch, config: MinitronConfig, field: str, value: int) -> str:
    attr, axis = PINS[field]
    full = getattr(arch, attr)
    if attr == "experts" and not full:
        return "the model is dense (it has no experts)"
    if value > full:
        return f"the model has only {full}"
    if value != full and axis not in config.axes:
        return f"the '{axis}' axis is not in 'axes', so it keeps the model's {full}"
    if attr == "heads":
        return (
            f"query heads must be a multiple of the model's {arch.kv_heads} key/value heads "
            "(every GQA group keeps the same number)"
        )
    if attr in ("hidden", "intermediate"):
        multiple = grid_multiples(arch, config)[attr == "intermediate"]
        key = "mlp_multiple" if attr == "intermediate" else "hidden_multiple"
        return f"pruned widths are multiples of {multiple} ('{key}') or the model's {full}"
    return f"the search keeps between {min(allowed_sizes(arch, config, field))} and {full}"


def check_pins(arch: Arch, config: MinitronConfig) -> None:
    """Raise ParameterConflict (field ``shape.<name>``) for a pinned size the search cannot
    produce, with the model's value and the nearest size that works."""
    if config.shape is None:
        return
    for field, (attr, _) in PINS.items():
        value = getattr(config.shape, field)
        if value is None:
            continue
        allowed = allowed_sizes(arch, config, field)
        if value in allowed:
            continue
        model_value: object = getattr(arch, attr)
        if attr == "heads":
            model_value = {"num_attention_heads": arch.heads, "num_key_value_heads": arch.kv_heads}
        raise ParameterConflict(
            f"shape.{field}",
            value=value,
            model_value=model_value,
            working_value=min(allowed, key=lambda a: (abs(a - value), -a)) if allowed else None,
            reason=_reason(arch, config, field, value),
        )


def pinned_arch(arch: Arch, config: MinitronConfig) -> Arch:
    """``arch`` with every pinned size applied (the largest shape the pins allow)."""
    if config.shape is None:
        return arch
    sizes = {attr: getattr(config.shape, f) for f, (attr, _) in PINS.items()}
    return replace(arch, **{k: v for k, v in sizes.items() if v is not None})
