"""Which pruned shapes land on a target: the candidate search of ``minitron``, without torch.

The worker runs it after loading a model; the API runs it at submit time on the shape that
``config.json`` and the weight files' headers describe (``arch_from_config``), so an
unreachable target is refused before the job is queued. A refusal gives the range reachable
under the job's constraints (its axes, grid multiples and pinned sizes), and a constraint that
cannot hold is named (``pins.check_pins``) rather than reported as a range.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from slimforge.compression.planning import UnreachableTargetError
from slimforge.compression.pruning.arch import Arch, Candidate, candidate_shapes
from slimforge.compression.pruning.pins import allowed_sizes, check_pins, pinned_arch

if TYPE_CHECKING:
    from slimforge.compression.methods.minitron.config import MinitronConfig

__all__ = ["reachable_range", "search_space"]


def search_space(arch: Arch, config: MinitronConfig, *, target_params: int) -> list[Candidate]:
    """The candidate shapes for ``config`` (pinned sizes applied), nearest to the target first.

    Raises ``ParameterConflict`` for a pinned size the search cannot produce, and
    ``UnreachableTargetError`` when no shape lands within 1 %, with the range reachable under
    the job's constraints."""
    check_pins(arch, config)
    found = _pinned_candidates(arch, config, target_params, tolerance=0.01)
    if found:
        return found
    total = arch.params()
    smallest, largest = reachable_range(arch, config)
    reason = None
    if target_params >= total:
        reason = (
            "minitron always removes something (a layer, heads, channels or experts): ask for "
            "fewer parameters than the model has"
        )
    elif largest < smallest:
        reason = f"the axes {config.axes} cannot shrink this model"
    if reason is None and smallest <= target_params <= largest:
        raise _no_shape(arch, config, target_params, total, smallest, largest)
    raise UnreachableTargetError(
        target_params=target_params,
        min_params=smallest,
        max_params=max(smallest, largest),
        total_params=total,
        method="minitron",
        reason=reason,
    )


def reachable_range(arch: Arch, config: MinitronConfig) -> tuple[int, int]:
    """(fewest, most) parameters of a shape the axes and pinned sizes allow, other than the
    model itself; ``most < fewest`` when no such shape exists."""
    pin = config.shape
    sizes = {
        field: allowed_sizes(arch, config, field)
        for field in ("num_hidden_layers", "num_attention_heads", "intermediate_size")
    }
    sizes["hidden_size"] = allowed_sizes(arch, config, "hidden_size")
    sizes["num_local_experts"] = allowed_sizes(arch, config, "num_local_experts") or [0]
    if pin is not None:
        for field in sizes:
            value = getattr(pin, field)
            if value is not None:
                sizes[field] = [value]
    smallest = _shape(arch, {f: min(v) for f, v in sizes.items()}).params()
    largest_pinned = pinned_arch(arch, config)
    if largest_pinned != arch:
        return smallest, largest_pinned.params()
    # No pin changes the model: the largest shape is one step down along one free axis.
    steps = [
        _shape(arch, {f: v[1]}).params()
        for f, v in sizes.items()
        if len(v) > 1 and (pin is None or getattr(pin, f) is None)
    ]
    return smallest, max(steps, default=smallest - 1)


def _shape(arch: Arch, sizes: dict[str, int]) -> Arch:
    attrs = {
        "num_hidden_layers": "layers",
        "num_attention_heads": "heads",
        "intermediate_size": "intermediate",
        "hidden_size": "hidden",
        "num_local_experts": "experts",
    }
    changed: dict[str, int] = {attrs[f]: v for f, v in sizes.items()}
    return replace(arch, **changed)  # type: ignore[arg-type]  # int fields only


def _pinned_candidates(
    arch: Arch, config: MinitronConfig, target_params: int, *, tolerance: float
) -> list[Candidate]:
    """Grid shapes within ``tolerance`` of the target that have every size the user pinned."""
    found = candidate_shapes(
        arch,
        target_params,
        axes=config.axes,
        hidden_multiple=config.hidden_multiple,
        mlp_multiple=config.mlp_multiple,
        tolerance=tolerance,
    )
    pin = config.shape
    if pin is None:
        return found
    wanted = {
        "hidden": pin.hidden_size,
        "intermediate": pin.intermediate_size,
        "heads": pin.num_attention_heads,
        "layers": pin.num_hidden_layers,
        "experts": pin.num_local_experts,
    }
    return [
        c for c in found if all(v is None or getattr(c.arch, k) == v for k, v in wanted.items())
    ]


def _no_shape(
    arch: Arch, config: MinitronConfig, target: int, total: int, smallest: int, largest: int
) -> UnreachableTargetError:
    """Inside the range, but no grid shape (with the pinned sizes) lands within 1 %: the
    closest one that does exist is named."""
    near = _pinned_candidates(arch, config, target, tolerance=1.0)
    return UnreachableTargetError(
        target_params=target,
        min_params=smallest,
        max_params=largest,
        total_params=total,
        method="minitron",
        closest_params=near[0].params if near else None,
        hint="add the 'mlp' axis, use a smaller mlp_multiple, or pin fewer sizes",
        reason=None if near else "no shape on the grid of these axes and multiples comes near",
    )
