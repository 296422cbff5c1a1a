"""Claiming and ending a job's row through a short database outage (``slimforge.worker.db_retry``).

Both writes are retried; a try after a lost connection first checks whether the earlier try's
commit landed (the job is then already ours, or already ended by us), so neither is done twice.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from slimforge.app.db import utcnow
from slimforge.app.jobs import lifecycle
from slimforge.app.jobs.models import Job
from slimforge.worker.db_retry import retry_db

__all__ = ["claim_job", "finish_job"]


def claim_job(
    *,
    session_factory: sessionmaker[Session],
    job_id: str,
    owner: str,
    lease_seconds: int,
    retry_seconds: float,
) -> Job | None:
    """:func:`slimforge.app.jobs.lifecycle.claim_job`, retried: the job if this worker now holds its
    lease, None if it runs elsewhere, has ended or does not exist."""

    def claim(attempt: int) -> Job | None:
        with session_factory() as session:
            if attempt > 1:  # the earlier try's commit may have landed: then the job is ours
                mine = session.scalar(
                    select(Job).where(
                        Job.id == job_id, Job.status == "running", Job.lease_owner == owner
                    )
                )
                if mine is not None:
                    return mine
            return lifecycle.claim_job(
                session, job_id=job_id, owner=owner, lease_seconds=lease_seconds
            )

    return retry_db(claim, what=f"job {job_id}: claim", seconds=retry_seconds)


def finish_job(
    *,
    session_factory: sessionmaker[Session],
    job_id: str,
    owner: str,
    status: str,
    error: str | None,
    retry_seconds: float,
) -> bool:
    """:func:`slimforge.app.jobs.lifecycle.finish_job`, retried: whether this worker ended the
    job (so
    its ``job.<status>`` webhook is due)."""
    since = utcnow()

    def finish(attempt: int) -> bool:
        with session_factory() as session:
            if attempt > 1:  # the earlier try's commit may have landed: then the job is ended
                done = session.scalar(
                    select(Job.id).where(
                        Job.id == job_id,
                        Job.status == status,
                        Job.lease_owner == owner,
                        Job.finished_at >= since,
                    )
                )
                if done is not None:
                    return True
            return lifecycle.finish_job(
                session, job_id=job_id, owner=owner, status=status, error=error
            )

    return retry_db(finish, what=f"job {job_id}: final status", seconds=retry_seconds)
