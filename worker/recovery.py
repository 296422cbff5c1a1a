"""Requeue jobs whose worker died, so they resume (from their checkpoints) on a live worker;
apply the artifact retention setting.

Each worker runs a :class:`OrphanSweeper` thread (both sweeps). A job's lease is renewed while
it makes progress; a lease that expired means its worker is gone (killed, out of memory, or
machine lost).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts.service import purge_expired_artifacts
from app.artifacts.storage import make_store
from app.jobs import lifecycle
from app.queue import enqueue_job
from app.settings import Settings

__all__ = ["OrphanSweeper", "purge_artifacts", "requeue_orphaned_jobs", "resend_stale_queued"]

log = logging.getLogger("slimforge.worker")


def requeue_orphaned_jobs(
    *, settings: Settings, session_factory: sessionmaker[Session], celery: Celery
) -> list[str]:
    """Mark orphaned running jobs queued again and send a message for each; returns their ids."""
    with session_factory() as session:
        job_ids = lifecycle.requeue_orphaned(session)
    for job_id in job_ids:
        log.warning("job %s lost its worker; requeued", job_id)
        enqueue_job(celery, settings, job_id)
    return job_ids


def resend_stale_queued(
    *, settings: Settings, session_factory: sessionmaker[Session], celery: Celery
) -> list[str]:
    """Send another message for jobs queued with nothing happening for
    ``resend_queued_after_seconds``: no job waits forever on a message the broker lost."""
    with session_factory() as session:
        job_ids = lifecycle.stale_queued(
            session, quiet_for=timedelta(seconds=settings.resend_queued_after_seconds)
        )
    for job_id in job_ids:
        log.warning("job %s still queued; its message was sent again", job_id)
        enqueue_job(celery, settings, job_id)
    return job_ids


def purge_artifacts(*, settings: Settings, session_factory: sessionmaker[Session]) -> list[str]:
    """Apply the artifact retention setting once; returns the jobs whose artifact went."""
    days = settings.artifact_retention_days
    if days is None:
        return []
    with session_factory() as session:
        purged = purge_expired_artifacts(session, store=make_store(settings), retention_days=days)
    if purged:
        log.info("retention: deleted the artifacts of %d job(s)", len(purged))
    return purged


class OrphanSweeper(threading.Thread):
    """Calls :func:`requeue_orphaned_jobs` at start and then every ``interval`` seconds."""

    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        celery: Celery,
        interval: float | None = None,
    ) -> None:
        super().__init__(name="slimforge-orphan-sweeper", daemon=True)
        self.settings, self.session_factory, self.celery = settings, session_factory, celery
        # Half a lease: an orphan waits at most 1.5 leases before it is requeued.
        self.interval = interval if interval is not None else max(1.0, settings.lease_seconds / 2)
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                requeue_orphaned_jobs(
                    settings=self.settings,
                    session_factory=self.session_factory,
                    celery=self.celery,
                )
                resend_stale_queued(
                    settings=self.settings,
                    session_factory=self.session_factory,
                    celery=self.celery,
                )
            except Exception:  # a database or broker hiccup must not kill the sweeper
                log.exception("orphan sweep failed; retrying in %.0f s", self.interval)
            if self.settings.artifact_retention_days is not None:
                try:
                    purge_artifacts(settings=self.settings, session_factory=self.session_factory)
                except Exception:
                    log.exception("artifact retention sweep failed")
            if self.stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self.stopped.set()
