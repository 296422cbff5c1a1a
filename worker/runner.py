"""Run a job: claim it, walk its stages (``slimforge.worker.stages``), end it.

The loop does what every stage needs once: it enters the stage (stage column, event, and the
cancellation and time-limit check), times it into ``metrics.stage_seconds``, and turns what a
stage raises into the job's status and message through one table, :data:`FAILURES`. Compression
code reports per-block progress through :class:`JobReporter`, which also renews the job's lease
and honours cancellation between blocks.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from slimforge.app.artifacts.models import Artifact
from slimforge.app.artifacts.storage import ChecksumMismatch
from slimforge.app.jobs.models import Job
from slimforge.app.limits.quotas import Quotas, effective_quotas
from slimforge.app.settings import Settings
from slimforge.compression import Cancelled, UnreachableTargetError
from slimforge.worker import job_rows, webhooks
from slimforge.worker.context import JobContext
from slimforge.worker.job_spec import job_device
from slimforge.worker.memory import OUT_OF_MEMORY, PeakMemory, is_out_of_memory, release_memory
from slimforge.worker.publish import PublishError
from slimforge.worker.reporter import (
    JobReporter,
    JobTimeLimit,
    LeaseLost,
    ResourceLimit,
    default_owner,
)
from slimforge.worker.stages import STAGES, Stage
from slimforge.worker.stages.gguf import OutputFormatError

__all__ = [
    "FAILURES",
    "JobReporter",
    "JobTimeLimit",
    "LeaseLost",
    "ResourceLimit",
    "default_owner",
    "run_job",
    "run_stages",
]

log = logging.getLogger("slimforge.worker")


@dataclass(frozen=True)
class Outcome:
    """How a job ends: its status (None: not ours to end) and its error message."""

    status: str | None
    error: str | None = None


def _unexpected(exc: BaseException, job_id: str) -> Outcome:
    if is_out_of_memory(exc):  # CUDA's OutOfMemoryError or the CPU allocator's
        log.error("job %s ran out of memory: %s", job_id, exc)
        return Outcome("failed", OUT_OF_MEMORY)
    log.error("job %s failed:\n%s", job_id, traceback.format_exc())
    return Outcome("failed", f"{type(exc).__name__}: {exc}")


def _lease_lost(_exc: BaseException, job_id: str) -> Outcome:
    log.warning("job %s: lease lost to another worker; stopping", job_id)
    return Outcome(None)


def _said(exc: BaseException, _job_id: str) -> Outcome:
    return Outcome("failed", str(exc))


# What a stage may raise -> how the job ends. The most specific class of the exception wins.
FAILURES: dict[type[BaseException], Callable[[BaseException, str], Outcome]] = {
    PublishError: lambda exc, job_id: Outcome(
        "failed",
        f"{exc}. The artifact is kept: POST /v1/jobs/{job_id}/publish retries the push.",
    ),
    ChecksumMismatch: lambda exc, _: Outcome(
        "failed",
        f"{exc}: the stored artifact is damaged, so nothing was pushed; submit the job again",
    ),
    LeaseLost: _lease_lost,
    Cancelled: lambda _exc, _: Outcome("cancelled"),  # partial work lives in the scratch folder
    JobTimeLimit: _said,
    ResourceLimit: _said,
    OutputFormatError: _said,  # says itself that the safetensors artifact is stored
    UnreachableTargetError: _said,
    FileNotFoundError: _said,
    ValueError: _said,
    Exception: _unexpected,
}


def _outcome(exc: BaseException, job_id: str) -> Outcome:
    handler = next(FAILURES[cls] for cls in type(exc).__mro__ if cls in FAILURES)
    return handler(exc, job_id)


def run_stages(ctx: JobContext, stages: tuple[Stage, ...] = STAGES) -> None:
    """Run each stage the job has, in order, timing each into ``metrics.stage_seconds``.
    A cancel that arrives once no stage can honour it is said in an event."""
    for stage in stages:
        if not stage.wanted(ctx):
            continue
        ctx.stage_started = time.monotonic()
        ctx.reporter.enter(stage.name, cancellable=stage.cancellable)
        stage.run(ctx)
        ctx.timings[stage.name] = ctx.stage_seconds()
    if ctx.reporter.cancel_requested():
        ctx.reporter.event(
            "cancel requested too late: the artifact was already stored, and publishing is "
            "not cancellable; the job ends succeeded",
            level="warning",
        )


def _resume_point(ctx: JobContext, quotas: Quotas, stored: bool) -> tuple[Stage, ...]:
    """The stages left: all of them, or only publishing when an earlier attempt got as far as
    storing the artifact."""
    ctx.max_params = quotas.max_model_params
    if not stored:
        return STAGES
    gguf_error = (ctx.stored_metrics.get("gguf") or {}).get("error")
    if gguf_error:  # stored after the GGUF failed, then the worker was lost: that failure stands
        raise OutputFormatError(f"{gguf_error}\nThe safetensors artifact is stored.")
    ctx.reporter.event("artifact already stored; continuing from there")
    return tuple(s for s in STAGES if s.name == "publishing")


def _attempt(job: Job, *, settings: Settings, reporter: JobReporter) -> Outcome:
    """Run the job's stages; how it ends."""
    device = job_device(settings)
    memory = PeakMemory(device=device)
    try:
        ctx = JobContext.for_job(
            job, settings=settings, reporter=reporter, device=device, memory=memory
        )

        def read_state(_attempt: int) -> tuple[bool, Quotas]:
            with reporter.factory() as session:
                stored = session.get(Artifact, job.id) is not None
                return stored, effective_quotas(session, tenant_id=job.tenant_id, settings=settings)

        stored, quotas = reporter.db_retry(read_state, what="artifact and quotas")
        memory.start()
        run_stages(ctx, _resume_point(ctx, quotas, stored))
        return Outcome("succeeded")
    except Exception as exc:
        return _outcome(exc, job.id)
    finally:
        memory.stop()


def run_job(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    job_id: str,
    owner: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Run a job if this worker wins its lease; returns its final status, None if skipped.

    Safe to call for a redelivered message: a job running elsewhere or already ended is left
    alone. A cancelled job's partial artifact is removed; a failure records a clear error.
    """
    owner = owner or default_owner()
    job = job_rows.claim_job(
        session_factory=session_factory,
        job_id=job_id,
        owner=owner,
        lease_seconds=settings.lease_seconds,
        retry_seconds=settings.db_retry_seconds,
    )
    if job is None:
        log.info("job %s is not runnable here (running elsewhere, ended or unknown)", job_id)
        return None
    if job.attempts == 1:  # a resumed job (worker lost, publish retried) did not start anew
        webhooks.emit(
            settings=settings, session_factory=session_factory, job_id=job_id, event="job.started"
        )
    reporter = JobReporter(
        session_factory,
        job_id,
        owner,
        settings.lease_seconds,
        time_limit=settings.max_job_seconds,
        clock=clock,
        db_retry_seconds=settings.db_retry_seconds,
    )
    reporter.start_heartbeat()
    try:
        outcome = _attempt(job, settings=settings, reporter=reporter)
    finally:
        reporter.stop_heartbeat()
    if outcome.status is None:
        return None
    if outcome.error == OUT_OF_MEMORY:
        release_memory()  # the frames that held the model are gone now
    _end(job_id, outcome, settings=settings, session_factory=session_factory, owner=owner)
    return outcome.status


def _end(
    job_id: str,
    outcome: Outcome,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    owner: str,
) -> None:
    """Remove the job's scratch folder, whose checkpoints only serve a restart of an
    unfinished job, then record the job's end (and send its webhook, if this worker ended it).
    In that order: whoever sees the job ended finds its checkpoints gone."""
    assert outcome.status is not None
    shutil.rmtree(settings.work_root / job_id, ignore_errors=True)
    ended = job_rows.finish_job(
        session_factory=session_factory,
        job_id=job_id,
        owner=owner,
        status=outcome.status,
        error=outcome.error,
        retry_seconds=settings.db_retry_seconds,
    )
    if ended:
        webhooks.emit(
            settings=settings,
            session_factory=session_factory,
            job_id=job_id,
            event=f"job.{outcome.status}",
        )
