"""Which pruned shapes land on a target: the candidate search of ``minitron``, without torch.

The worker runs it after loading a model; the API runs it at submit time on the shape that
``config.json`` and the checkpoint header describe (``arch_from_config``),
so an unreachable target is refused before the job is queued.
"""

from __future__ import annotations

from dataclasses import replace

from slimforge.compression.configs import MinitronConfig
from slimforge.compression.planning import UnreachableTargetError
from slimforge.compression.pruning.arch import Arch, Candidate, candidate_shapes

__all__ = ["search_space"]


def search_space(arch: Arch, config: MinitronConfig, *, target_params: int) -> list[Candidate]:
    """The candidate shapes for ``config`` (pinned sizes applied), nearest to the target first;
    raises UnreachableTargetError when none lands within 1 %."""
    found = _pinned_candidates(arch, config, target_params, tolerance=0.01)
    if not found:
        total, smallest = arch.params(), _smallest(arch, config)
        if smallest <= target_params <= total:
            raise _no_shape(arch, config, target_params, total, smallest)
        raise UnreachableTargetError(
            target_params=target_params,
            min_params=smallest,
            max_params=total,
            total_params=total,
            method="minitron",
        )
    return found


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


def _smallest(arch: Arch, config: MinitronConfig) -> int:
    """The fewest parameters the axes allow (one layer, one head per group, thinnest widths)."""
    axes = set(config.axes)
    return replace(
        arch,
        layers=1 if "depth" in axes else arch.layers,
        heads=arch.kv_heads if "heads" in axes else arch.heads,
        intermediate=min(config.mlp_multiple, arch.intermediate)
        if "mlp" in axes
        else arch.intermediate,
        hidden=min(config.hidden_multiple, arch.hidden) if "hidden" in axes else arch.hidden,
        experts=max(1, arch.experts_per_tok)
        if "experts" in axes and arch.experts
        else arch.experts,
    ).params()


def _no_shape(
    arch: Arch, config: MinitronConfig, target: int, total: int, smallest: int
) -> UnreachableTargetError:
    """Inside the range, but no grid shape (with the pinned sizes) lands within 1 %."""
    near = _pinned_candidates(arch, config, target, tolerance=0.25)
    closest = near[0].params if near else None
    return UnreachableTargetError(
        target_params=target,
        min_params=smallest,
        max_params=total,
        total_params=total,
        method="minitron",
        closest_params=closest,
        hint="add the 'mlp' axis, use a smaller mlp_multiple, or pin fewer sizes",
    )
