"""``distilling`` (when the job has ``distill``): logit KD from the original model into the
compressed student, saved as it trains so that a killed job goes on from the last save."""

from __future__ import annotations

from slimforge.compression.distill.kd_resume import KdCheckpoint
from slimforge.worker.context import JobContext
from slimforge.worker.kd import run_distillation

__all__ = ["layer_map", "run"]


def layer_map(ctx: JobContext) -> list[int] | None:
    """The teacher layer of each student layer: the layers the method kept, when it says
    (``method_details.kept_layers``: minitron), else None (an even spread)."""
    assert ctx.result is not None
    kept = ctx.result.details.get("kept_layers")
    return [int(i) for i in kept] if kept is not None else None


def run(ctx: JobContext) -> None:
    assert ctx.kd_plan is not None  # captured at calibrating
    ctx.metrics.update(
        run_distillation(
            ctx.model,
            ctx.kd_plan,
            reporter=ctx.reporter,
            eval_blocks=ctx.eval_blocks,
            layer_map=layer_map(ctx),
            checkpoint=KdCheckpoint(
                ctx.workdir / "kd", every_seconds=ctx.settings.kd_checkpoint_seconds
            ),
        )
    )
