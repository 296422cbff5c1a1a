"""Requeue jobs whose worker died, so they resume (from their checkpoints) on a live worker;
send again the messages a broker may have lost (queued jobs, pending webhook attempts); apply
the artifact retention setting.

Each worker runs a :class:`OrphanSweeper` thread (every sweep). A job's lease is renewed while
it makes progress; a lease that expired means its worker is gone (killed, out of memory, or
machine lost).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery import Celery
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from slimforge.app.artifacts.service import purge_expired_artifacts, purge_orphaned_artifacts
from slimforge.app.artifacts.storage import make_store
from slimforge.app.db import utcnow
from slimforge.app.jobs import lifecycle
from slimforge.app.queue import enqueue_job, enqueue_webhook
from slimforge.app.settings import Settings
from slimforge.app.webhooks.models import WebhookDelivery
from slimforge.worker.db_retry import is_transient

__all__ = [
    "OrphanSweeper",
    "purge_artifacts",
    "purge_orphans",
    "requeue_orphaned_jobs",
    "resend_stale_queued",
    "resend_stale_webhooks",
]

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


def resend_stale_webhooks(
    *, settings: Settings, session_factory: sessionmaker[Session], celery: Celery
) -> list[int]:
    """Send another message for webhook attempts still pending
    ``webhook_resend_after_seconds`` after they were due (the broker may have lost theirs);
    returns their ids. No event waits forever on a lost message.

    A resend moves the attempt's ``scheduled_at`` to now, and the next one waits at least as
    long as the attempt has existed: the waits double, so an attempt whose message is merely
    queued behind long jobs gathers a few extra messages, not one per sweep. Another message
    is always safe: an attempt is made only while its row is pending (a duplicate sends
    nothing), and receivers dedupe on the stable ``webhook-id``.
    """
    now = utcnow()
    after = timedelta(seconds=settings.webhook_resend_after_seconds)
    due = func.coalesce(WebhookDelivery.scheduled_at, WebhookDelivery.created_at)
    resent: list[int] = []
    with session_factory() as session:
        candidates = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.scheduled_at, WebhookDelivery.created_at)
            .where(WebhookDelivery.state == "pending", due < now - after)
            .order_by(WebhookDelivery.id)
        ).all()
        for delivery_id, scheduled_at, created_at in candidates:
            last = scheduled_at or created_at
            if now - last < max(after, last - created_at):
                continue
            # Compare-and-set on scheduled_at: when two workers' sweepers pick the same row,
            # one of them sends.
            same = (
                WebhookDelivery.scheduled_at.is_(None)
                if scheduled_at is None
                else WebhookDelivery.scheduled_at == scheduled_at
            )
            claimed = session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending", same)
                .values(scheduled_at=now)
                .execution_options(synchronize_session=False)
            )
            session.commit()
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            log.warning("webhook attempt %d still pending; its message was sent again", delivery_id)
            enqueue_webhook(celery, settings, delivery_id)
            resent.append(delivery_id)
    return resent


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


def purge_orphans(*, settings: Settings, session_factory: sessionmaker[Session]) -> list[str]:
    """Remove stored files whose job was deleted (a deletion interrupted after its commit);
    returns those job ids."""
    with session_factory() as session:
        purged = purge_orphaned_artifacts(session, store=make_store(settings))
    if purged:
        log.warning("removed the files of %d deleted job(s): %s", len(purged), ", ".join(purged))
    return purged


class OrphanSweeper(threading.Thread):
    """Runs the sweeps (:func:`requeue_orphaned_jobs`, :func:`resend_stale_queued`,
    :func:`resend_stale_webhooks`, :func:`purge_orphans`, :func:`purge_artifacts`) at start and
    then every ``interval`` seconds."""

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
            except Exception as exc:  # a database or broker hiccup must not kill the sweeper
                self._failed("orphan sweep", exc)
            try:
                resend_stale_webhooks(
                    settings=self.settings,
                    session_factory=self.session_factory,
                    celery=self.celery,
                )
            except Exception as exc:
                self._failed("webhook resend sweep", exc)
            try:
                purge_orphans(settings=self.settings, session_factory=self.session_factory)
                if self.settings.artifact_retention_days is not None:
                    purge_artifacts(settings=self.settings, session_factory=self.session_factory)
            except Exception as exc:
                self._failed("artifact retention sweep", exc)
            if self.stopped.wait(self.interval):
                return

    def _failed(self, sweep: str, exc: Exception) -> None:
        # A database outage (which the running job rides out) is one line per sweep, not a
        # traceback every few seconds; anything else keeps its traceback.
        if is_transient(exc):
            log.warning(
                "%s: database unavailable; retrying in %.0f s (%s)",
                sweep,
                self.interval,
                type(exc).__name__,
            )
        else:
            log.exception("%s failed; retrying in %.0f s", sweep, self.interval)

    def stop(self) -> None:
        self.stopped.set()
