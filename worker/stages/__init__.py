"""A job's stages, in order: each a plain function of the job's context.

The runner (``slimforge.worker.runner``) walks :data:`STAGES`: it enters each stage (the stage
column and its "stage … started" event), checks for cancellation when the stage allows it,
times it into ``metrics.stage_seconds``, and maps what it raises to the job's status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slimforge.contract.jobs import Stage as StageName
from slimforge.worker.context import JobContext
from slimforge.worker.stages import (
    calibrate,
    compress,
    distill,
    evaluate,
    export,
    load,
    publish,
    store,
)

__all__ = ["STAGES", "Stage"]


def _always(_ctx: JobContext) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One stage: its name (the job's ``stage``), what it does, whether this job has it, and
    whether a cancel request stops the job on entering it."""

    name: StageName
    run: Callable[[JobContext], None]
    wanted: Callable[[JobContext], bool] = _always
    cancellable: bool = True


STAGES: tuple[Stage, ...] = (
    Stage("loading", load.run),
    Stage("calibrating", calibrate.run),
    Stage("compressing", compress.run),
    Stage("distilling", distill.run, wanted=lambda ctx: ctx.request.distill is not None),
    Stage("evaluating", evaluate.run),
    Stage("exporting", export.run),
    Stage("storing", store.run),
    # The artifact is stored by now: a cancel is too late (issue 15, case 10).
    Stage("publishing", publish.run, wanted=publish.wanted, cancellable=False),
)
