"""Jobs: submission, listing, cancellation and the event log.

Keyword-only functions that take the session; the routers and the worker share them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from slimforge.app.artifacts.models import Artifact
from slimforge.app.auth.service import Principal, allows_remote_code
from slimforge.app.credentials.models import HubCredential
from slimforge.app.db import utcnow as now
from slimforge.app.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    UnprocessableInput,
)
from slimforge.app.jobs.model_checks import check_job_against_model
from slimforge.app.jobs.models import Job, JobEvent
from slimforge.app.jobs.outputs import ResolvedOutput, resolve_output
from slimforge.app.jobs.text_inputs import check_text_encodings
from slimforge.app.jobs.text_sources import check_held_out
from slimforge.app.limits.quotas import check_model_size, check_submit_quotas
from slimforge.app.paths import resolve_local_path
from slimforge.app.settings import Settings
from slimforge.app.webhooks.service import check_job_webhook, create_deliveries
from slimforge.contract.jobs import TERMINAL_STATUSES, EventOut, JobCreate, JobOut

log = logging.getLogger("slimforge.api")

_NO_TOKEN = (
    "output.hub_repo needs a Hugging Face token for this tenant: set one with "
    "PUT /v1/credentials/hub"
)

__all__ = [
    "add_event",
    "cancel_job",
    "event_out",
    "get_job",
    "job_out",
    "list_events",
    "list_jobs",
    "request_publish",
    "submit_job",
]


def _request_hash(body: JobCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _resolved_spec(
    settings: Settings, body: JobCreate
) -> tuple[dict[str, Any], int | None, ResolvedOutput]:
    """The job body with local paths checked and made absolute for the worker and the output
    formats resolved (``slimforge.app.jobs.outputs``), the local model's parameter count (None:
    a Hub model, or one not readable without loading it), and the resolved output."""
    spec = body.model_dump(mode="json")
    params = None
    folder = None
    if body.model.path is not None:
        folder = resolve_local_path(settings, body.model.path, field="model.path")
        if body.model.gguf_file is not None:
            resolve_local_path(
                settings, str(folder / body.model.gguf_file), field="model.gguf_file"
            )
        elif not (folder / "config.json").is_file():
            raise UnprocessableInput(
                f"model.path: '{body.model.path}' has no config.json; give a Hugging Face "
                "model folder, or a folder with a GGUF file and 'gguf_file'",
                details={"field": "model.path"},
            )
        spec["model"]["path"] = str(folder)
        params = check_job_against_model(body, folder)
    for name in ("calibration", "evaluation"):
        data = getattr(body, name)
        if data is not None and data.path is not None:
            path = resolve_local_path(settings, data.path, field=f"{name}.path", kind="file")
            spec[name]["path"] = str(path)
    if body.evaluation is not None:
        spec["evaluation"]["task_folders"] = [
            str(
                resolve_local_path(settings, folder, field="evaluation.task_folders", kind="folder")
            )
            for folder in body.evaluation.task_folders
        ]
    check_held_out(spec["calibration"], spec.get("evaluation"))
    output = resolve_output(body, folder)
    spec["output"] = output.section
    return spec, params, output


def submit_job(
    session: Session,
    *,
    principal: Principal,
    body: JobCreate,
    settings: Settings,
    idempotency_key: str | None,
    enqueue: Callable[[str], None],
) -> tuple[Job, bool]:
    """Record and queue a job; returns (job, created). Replays an idempotent request."""
    request_hash = _request_hash(body)
    if idempotency_key is not None:
        existing = session.scalar(
            select(Job).where(
                Job.tenant_id == principal.tenant_id, Job.idempotency_key == idempotency_key
            )
        )
        if existing is not None:
            if existing.request_hash != request_hash:
                raise Conflict(
                    f"Idempotency-Key '{idempotency_key}' was already used with another body "
                    f"(job {existing.id}); use a new key for a new job"
                )
            return existing, False
    if body.model.trust_remote_code and not allows_remote_code(
        session, tenant_id=principal.tenant_id
    ):
        raise Forbidden(
            "model.trust_remote_code runs the model's own code on the workers, which this "
            "tenant is not allowed: ask the operator ('slimforge admin allow-remote-code "
            f"--tenant {principal.tenant_name}'), or use a model of a standard architecture",
            details={"field": "model.trust_remote_code"},
        )
    check_submit_quotas(session, tenant_id=principal.tenant_id, settings=settings)
    if (
        body.output
        and body.output.hub_repo
        and session.get(HubCredential, principal.tenant_id) is None
    ):
        raise UnprocessableInput(_NO_TOKEN, details={"field": "output.hub_repo"})
    if body.webhook is not None:
        check_job_webhook(
            session, tenant_id=principal.tenant_id, webhook=body.webhook, settings=settings
        )
    spec, params, output = _resolved_spec(settings, body)
    check_text_encodings(spec)
    check_model_size(session, tenant_id=principal.tenant_id, settings=settings, params=params)
    job = Job(
        tenant_id=principal.tenant_id,
        status="queued",
        method=body.method.name,
        spec=spec,
        metadata_=body.metadata,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        metrics=dict(output.metrics),
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        # A concurrent request with the same key won the race: replay its job.
        session.rollback()
        if idempotency_key is None:
            raise
        return submit_job(
            session,
            principal=principal,
            body=body,
            settings=settings,
            idempotency_key=idempotency_key,
            enqueue=enqueue,
        )
    add_event(session, job_id=job.id, message="job queued", data={"method": job.method})
    for note in output.notes:
        add_event(session, job_id=job.id, message=note.message, level=note.level, data=note.data)
    session.commit()
    try:
        enqueue(job.id)
    except Exception as exc:
        job.status = "failed"
        job.error = f"could not queue the job: the broker is unreachable ({type(exc).__name__})"
        job.finished_at = now()
        add_event(session, job_id=job.id, level="error", message=job.error)
        session.commit()
        raise ServiceUnavailable(
            "the job queue is unreachable; the job was not started, retry in a few seconds",
            details={"job_id": job.id},
        ) from exc
    return job, True


# Built once: the status read runs it on every poll of every client.
_JOB_OF_TENANT = select(Job).where(
    Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id")
)


def get_job(session: Session, *, tenant_id: str, job_id: str) -> Job:
    """The tenant's job, or 404 (also for other tenants' jobs: their existence is private)."""
    job = session.scalar(_JOB_OF_TENANT, {"job_id": job_id, "tenant_id": tenant_id})
    if job is None:
        raise NotFound(f"no job '{job_id}'")
    return job


def list_jobs(
    session: Session,
    *,
    tenant_id: str,
    status: str | None,
    limit: int,
    after: str | None,
) -> tuple[list[Job], str | None]:
    """Newest first; ``after`` is the last job id of the previous page."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    if after is not None:
        cursor = session.scalar(select(Job.seq).where(Job.id == after, Job.tenant_id == tenant_id))
        if cursor is None:
            raise NotFound(f"cursor 'after={after}' is not a job of yours")
        query = query.where(Job.seq < cursor)
    rows = list(session.scalars(query.order_by(Job.seq.desc()).limit(limit + 1)))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def cancel_job(
    session: Session,
    *,
    tenant_id: str,
    job_id: str,
    send_webhook: Callable[[int], None] | None = None,
) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next checkpoint.

    A queued job ends here, not on a worker, so its ``job.cancelled`` webhook (if subscribed)
    is recorded here and each delivery id handed to ``send_webhook``."""
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job.status in TERMINAL_STATUSES:
        raise Conflict(f"job '{job_id}' already ended with status '{job.status}'")
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = now()
        job.cancel_requested = True
        add_event(session, job_id=job.id, message="job cancelled before it started")
        session.commit()
        for delivery_id in create_deliveries(session, job_id=job.id, event="job.cancelled"):
            if send_webhook is not None:
                send_webhook(delivery_id)
        return job
    elif not job.cancel_requested:
        job.cancel_requested = True
        add_event(
            session,
            job_id=job.id,
            stage=job.stage,
            message="cancellation requested; the worker stops at the next block",
        )
    session.commit()
    return job


def request_publish(
    session: Session, *, tenant_id: str, job_id: str, enqueue: Callable[[str], None]
) -> Job:
    """Queue the push of a job whose publishing failed; the worker runs that stage alone
    (the artifact is already stored)."""
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if not (job.spec.get("output") or {}).get("hub_repo"):
        raise Conflict(f"job '{job_id}' has no output.hub_repo to publish to")
    if not (job.status == "failed" and job.stage == "publishing"):
        raise Conflict(
            f"only a job that failed while publishing can be published again; job '{job_id}' "
            f"is {job.status}" + (f" (stage {job.stage})" if job.stage else "")
        )
    if session.get(Artifact, job.id) is None:
        raise Conflict(f"job '{job_id}' has no stored artifact to publish")
    if session.get(HubCredential, tenant_id) is None:
        raise UnprocessableInput(_NO_TOKEN, details={"field": "output.hub_repo"})
    job.status, job.error, job.finished_at = "queued", None, None
    add_event(session, job_id=job.id, stage="publishing", message="publishing requested again")
    session.commit()
    enqueue(job.id)
    return job


def add_event(
    session: Session,
    *,
    job_id: str,
    message: str,
    level: str = "info",
    stage: str | None = None,
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(job_id=job_id, message=message, level=level, stage=stage, data=data or {})
    session.add(event)
    return event


def list_events(
    session: Session, *, tenant_id: str, job_id: str, after: int | None, limit: int
) -> tuple[Job, list[JobEvent], int | None]:
    """Events in order; ``after`` is the last event id already seen."""
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id > after)
    rows = list(session.scalars(query.order_by(JobEvent.id).limit(limit + 1)))
    page = rows[:limit]
    next_cursor = page[-1].id if len(rows) > limit else None
    return job, page, next_cursor


def job_out(job: Job) -> JobOut:
    base = f"/v1/jobs/{job.id}"
    return JobOut(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        stage=job.stage,
        method=job.method,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        cancel_requested=job.cancel_requested,
        attempts=job.attempts,
        error=job.error,
        metrics=job.metrics or {},
        metadata=job.metadata_ or {},
        request=job.spec,
        links={
            "self": base,
            "events": f"{base}/events",
            "cancel": f"{base}/cancel",
            "artifacts": f"{base}/artifacts",
        },
    )


def event_out(event: JobEvent) -> EventOut:
    return EventOut(
        id=event.id,
        job_id=event.job_id,
        time=event.created_at,
        level=event.level,
        stage=event.stage,
        message=event.message,
        data=event.data or {},
    )
