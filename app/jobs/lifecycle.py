"""State transitions of a running job, used by the worker.

The lease makes ``run_job`` idempotent: a worker starts a job only by winning a conditional
UPDATE (queued → running, or running with an expired lease → running), so a redelivered message
for a job that is running elsewhere or already finished does nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from slimforge.app.db import utcnow
from slimforge.app.jobs.models import Job, JobEvent
from slimforge.app.jobs.service import add_event
from slimforge.contract.jobs import TERMINAL_STATUSES

__all__ = [
    "claim_job",
    "expire_leases_of",
    "finish_job",
    "is_cancel_requested",
    "merge_metrics",
    "renew_lease",
    "requeue_orphaned",
    "set_stage",
    "stale_queued",
]


def claim_job(session: Session, *, job_id: str, owner: str, lease_seconds: int) -> Job | None:
    """Take the job's lease and mark it running; None when another run owns or ended it.

    A job with a pending cancel request is still claimed: the runner's first check then ends
    it ``cancelled`` instead of leaving it ``running`` after a crash.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(
                Job.status == "queued",
                and_(Job.status == "running", Job.lease_expires_at < now),
            ),
        )
        .values(
            status="running",
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            started_at=now,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    job = session.scalar(select(Job).where(Job.id == job_id))
    assert job is not None
    add_event(
        session,
        job_id=job_id,
        message="job started" if job.attempts == 1 else f"job restarted (attempt {job.attempts})",
        data={"worker": owner, "attempt": job.attempts},
    )
    session.commit()
    return job


def requeue_orphaned(session: Session) -> list[str]:
    """Put running jobs whose lease expired (their worker died) back to ``queued``.

    Returns their ids so the caller can send a new message for each: the old message may be
    lost (the file-system broker) or come back only after the broker's visibility timeout
    (Redis). The conditional UPDATE means two sweepers never requeue the same job twice, and a
    job goes back to ``queued`` only once per death, so the queue does not fill with copies.
    """
    now = utcnow()
    candidates = session.scalars(
        select(Job.id).where(Job.status == "running", Job.lease_expires_at < now)
    ).all()
    requeued: list[str] = []
    for job_id in candidates:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.lease_expires_at < now)
            .values(status="queued", lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            add_event(
                session,
                job_id=job_id,
                level="warning",
                message="worker lost (lease expired); job requeued and will resume",
            )
            requeued.append(job_id)
    session.commit()
    return requeued


def expire_leases_of(session: Session, *, owner: str, reason: str) -> list[str]:
    """End the leases of a worker process known to be dead (its parent saw it exit), so the
    next sweep requeues its jobs now instead of one lease later; returns their ids.

    ``reason`` (e.g. ``"process 123 killed by SIGKILL"``) goes into a warning event on each
    job: a job's log says that its worker was lost and why.
    """
    now = utcnow()
    job_ids = list(
        session.scalars(select(Job.id).where(Job.status == "running", Job.lease_owner == owner))
    )
    for job_id in job_ids:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.lease_owner == owner)
            .values(lease_expires_at=now)
            .execution_options(synchronize_session=False)
        )
        add_event(
            session,
            job_id=job_id,
            level="warning",
            message=f"worker lost: {reason}; the job will be requeued",
            data={"worker": owner},
        )
    session.commit()
    return job_ids


def stale_queued(session: Session, *, quiet_for: timedelta) -> list[str]:
    """Queued jobs with no event for ``quiet_for`` (no worker took them, nothing happened):
    their broker message may be lost (a broker restarted without persistence). Records an
    event on each, so the next call waits ``quiet_for`` again before naming it twice.

    Sending another message is always safe: the lease lets only one of them run the job.
    """
    cutoff = utcnow() - quiet_for
    last = (
        select(JobEvent.job_id, func.max(JobEvent.created_at).label("at"))
        .group_by(JobEvent.job_id)
        .subquery()
    )
    stale = session.scalars(
        select(Job.id)
        .outerjoin(last, last.c.job_id == Job.id)
        .where(Job.status == "queued", func.coalesce(last.c.at, Job.created_at) < cutoff)
    ).all()
    for job_id in stale:
        add_event(
            session,
            job_id=job_id,
            level="warning",
            message="still queued with no worker on it: its message was sent again",
        )
    session.commit()
    return list(stale)


def renew_lease(session: Session, *, job_id: str, owner: str, lease_seconds: int) -> bool:
    """Extend our lease; False if we lost it (another worker took the job over)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def set_stage(session: Session, *, job_id: str, stage: str) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(stage=stage)
        .execution_options(synchronize_session=False)
    )
    add_event(session, job_id=job_id, stage=stage, message=f"stage {stage} started")
    session.commit()


def is_cancel_requested(session: Session, *, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def merge_metrics(session: Session, *, job_id: str, metrics: dict[str, Any]) -> None:
    """Add metrics to the job as they become known (visible while it runs)."""
    job = session.scalar(select(Job).where(Job.id == job_id))
    assert job is not None
    job.metrics = {**(job.metrics or {}), **metrics}
    session.commit()


def finish_job(
    session: Session,
    *,
    job_id: str,
    owner: str,
    status: str,
    error: str | None = None,
    message: str | None = None,
) -> bool:
    """End the job if we still own it; returns False when the lease was lost."""
    assert status in TERMINAL_STATUSES
    job = session.scalar(select(Job).where(Job.id == job_id))
    if job is None or job.lease_owner != owner or job.status != "running":
        session.rollback()
        return False
    job.status = status
    job.error = error
    job.finished_at = utcnow()
    job.lease_expires_at = None
    add_event(
        session,
        job_id=job_id,
        level="error" if status == "failed" else "info",
        stage=job.stage,
        message=message or f"job {status}" + (f": {error}" if error else ""),
        data={"status": status},
    )
    session.commit()
    return True
