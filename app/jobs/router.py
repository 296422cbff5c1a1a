"""HTTP routes for jobs. HTTP concerns only: the work is in ``slimforge.app.jobs.service``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from slimforge.app.deps import (
    CeleryDep,
    ReadPrincipalDep,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
    SubmitPrincipalDep,
)
from slimforge.app.errors import error_responses
from slimforge.app.jobs import service
from slimforge.app.queue import enqueue_job, enqueue_webhook
from slimforge.contract.jobs import (
    TERMINAL_STATUSES,
    EventPage,
    JobCreate,
    JobOut,
    JobPage,
    JobStatus,
)

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
)


@router.post("", status_code=202, response_model=JobOut)
def create_job(
    body: JobCreate,
    response: Response,
    session: SessionDep,
    principal: SubmitPrincipalDep,
    settings: SettingsDep,
    celery: CeleryDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    """Submit a compression job. Replays the same job for a repeated ``Idempotency-Key``."""
    job, created = service.submit_job(
        session,
        principal=principal,
        body=body,
        settings=settings,
        idempotency_key=idempotency_key,
        enqueue=lambda job_id: enqueue_job(celery, settings, job_id),
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return service.job_out(job)


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    principal: ReadPrincipalDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: str | None = None,
) -> JobPage:
    """The tenant's jobs, newest first, with cursor pagination."""
    jobs, cursor = service.list_jobs(
        session, tenant_id=principal.tenant_id, status=status, limit=limit, after=after
    )
    return JobPage(items=[service.job_out(j) for j in jobs], next_cursor=cursor)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, session: SessionDep, principal: ReadPrincipalDep) -> JobOut:
    return service.job_out(service.get_job(session, tenant_id=principal.tenant_id, job_id=job_id))


@router.post("/{job_id}/publish", status_code=202, response_model=JobOut)
def publish_job(
    job_id: str,
    session: SessionDep,
    principal: SubmitPrincipalDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> JobOut:
    """Retry the Hub push of a job that failed at stage `publishing` (the artifact is kept)."""
    job = service.request_publish(
        session,
        tenant_id=principal.tenant_id,
        job_id=job_id,
        enqueue=lambda jid: enqueue_job(celery, settings, jid),
    )
    return service.job_out(job)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut)
def cancel_job(
    job_id: str,
    session: SessionDep,
    principal: SubmitPrincipalDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> JobOut:
    """Cancel a job: at once if queued, at the next block if running."""
    job = service.cancel_job(
        session,
        tenant_id=principal.tenant_id,
        job_id=job_id,
        send_webhook=lambda delivery_id: enqueue_webhook(celery, settings, delivery_id),
    )
    return service.job_out(job)


@router.get(
    "/{job_id}/events",
    response_model=EventPage,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def job_events(
    job_id: str,
    session: SessionDep,
    factory: SessionFactoryDep,
    principal: ReadPrincipalDep,
    settings: SettingsDep,
    after: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    stream: bool = False,
    last_event_id: Annotated[int | None, Header(ge=0)] = None,
) -> EventPage | StreamingResponse:
    """The job's events; ``?stream=true`` follows them as server-sent events until it ends."""
    job, events, cursor = service.list_events(
        session, tenant_id=principal.tenant_id, job_id=job_id, after=after, limit=limit
    )
    if not stream:
        return EventPage(
            items=[service.event_out(e) for e in events],
            next_cursor=cursor,
            job_status=job.status,  # type: ignore[arg-type]
        )
    start = last_event_id if last_event_id is not None else after
    return StreamingResponse(
        _sse(factory, principal.tenant_id, job_id, start, settings.sse_poll_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(
    factory: sessionmaker[Session], tenant_id: str, job_id: str, after: int | None, poll: float
) -> Iterator[str]:
    """Poll the event table and emit new rows until the job has ended and all are sent."""
    last_beat = time.monotonic()
    while True:
        with factory() as session:
            job, events, _ = service.list_events(
                session, tenant_id=tenant_id, job_id=job_id, after=after, limit=500
            )
            status = job.status
        for event in events:
            after = event.id
            payload = service.event_out(event).model_dump_json()
            yield f"id: {event.id}\nevent: job.event\ndata: {payload}\n\n"
        if not events and status in TERMINAL_STATUSES:
            yield f"event: job.end\ndata: {json.dumps({'job_id': job_id, 'status': status})}\n\n"
            return
        if not events:
            if time.monotonic() - last_beat > 15:
                # A comment line keeps proxies from closing an idle connection.
                last_beat = time.monotonic()
                yield ": keep-alive\n\n"
            time.sleep(poll)
