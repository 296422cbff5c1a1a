"""A job's reporter: progress events, cancellation and time-limit checks, and the lease
heartbeat that tells other workers this one is alive.

Its database reads and writes ride out a short outage (``slimforge.worker.db_retry``): a job
waits for
the database to come back instead of failing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from slimforge.app.db import session_scope, utcnow
from slimforge.app.jobs import lifecycle
from slimforge.app.jobs.models import JobEvent
from slimforge.app.jobs.service import add_event
from slimforge.compression import Cancelled
from slimforge.worker.db_retry import retry_db

__all__ = ["JobReporter", "JobTimeLimit", "LeaseLost", "ResourceLimit", "default_owner"]

log = logging.getLogger("slimforge.worker")

T = TypeVar("T")


class LeaseLost(Exception):
    """Another worker took the job over (our lease expired): stop without touching it."""


class JobTimeLimit(Exception):
    """The job ran longer than ``max_job_seconds``: it fails."""


class ResourceLimit(Exception):
    """A resource limit (the tenant's model size quota, disk space) stops the job: it fails."""


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def event_landed(session: Session, *, job_id: str, since: datetime, **match: Any) -> bool:
    """Whether the job has an event written since ``since`` whose columns equal ``match``.

    A retried event write asks this first: the try that saw the connection drop may have
    committed. ``created_at`` comes from this process's clock when the row is written, so an
    event of that try is never older than ``since`` taken before it.
    """
    query = select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.created_at >= since)
    for column, value in match.items():
        query = query.where(getattr(JobEvent, column) == value)
    return session.scalar(query.limit(1)) is not None


@dataclass
class JobReporter:
    """Writes progress events to the job's log; reads the cancel flag; and, from a heartbeat
    thread (:meth:`start_heartbeat`), renews the job's lease while this process lives.

    The lease says "this worker is alive", not "this job made progress": a long SVD or a slow
    block must not look like a dead worker, so renewal does not wait for progress callbacks.
    """

    factory: sessionmaker[Session]
    job_id: str
    owner: str
    lease_seconds: int
    stage: str | None = None
    check_interval: float = 1.0
    time_limit: float | None = None  # seconds from construction; checked with cancellation
    clock: Callable[[], float] = time.monotonic
    db_retry_seconds: float = 60.0  # how long a read or write waits out a database outage
    _started: float = field(default=0.0, init=False)
    _last_check: float = field(default=0.0, init=False)
    _lost: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._started = self.clock()

    def start_heartbeat(self) -> None:
        """Renew the lease every third of its length until :meth:`stop_heartbeat`."""

        def renew(_attempt: int) -> bool:
            # Safe to repeat: it sets the expiry from now again, if the lease is still ours.
            with self.factory() as session:
                return lifecycle.renew_lease(
                    session,
                    job_id=self.job_id,
                    owner=self.owner,
                    lease_seconds=self.lease_seconds,
                )

        def beat() -> None:
            while not self._stop.wait(self.lease_seconds / 3):
                try:
                    # Retried soon after the database is back, not a third of a lease later:
                    # the lease may be close to expiring after an outage. ``stop`` cuts the
                    # wait short when the job ends.
                    alive = retry_db(
                        renew,
                        what=f"job {self.job_id}: lease renewal",
                        seconds=self.db_retry_seconds,
                        stop=self._stop,
                    )
                except Exception:  # a longer outage: try again at the next beat
                    if self._stop.is_set():  # the job ended while we waited: nothing to renew
                        return
                    log.exception("job %s: lease renewal failed", self.job_id)
                    continue
                if not alive:
                    self._lost.set()
                    return

        self._thread = threading.Thread(target=beat, name=f"lease-{self.job_id}", daemon=True)
        self._thread.start()

    def db_retry(self, action: Callable[[int], T], *, what: str) -> T:
        """``action(try_number)`` retried through a database outage of up to
        ``db_retry_seconds`` (see :func:`slimforge.worker.db_retry.retry_db`)."""
        return retry_db(action, what=f"job {self.job_id}: {what}", seconds=self.db_retry_seconds)

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def event(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        stage, since = self.stage, utcnow()

        def write(attempt: int) -> None:
            with session_scope(self.factory) as session:
                if attempt > 1 and event_landed(
                    session, job_id=self.job_id, since=since, stage=stage, message=message
                ):
                    return  # the earlier try committed before its connection dropped
                add_event(
                    session,
                    job_id=self.job_id,
                    stage=stage,
                    level=level,
                    message=message,
                    data=data,
                )

        self.db_retry(write, what="event")
        self._raise_if_lost()

    def check_cancelled(self) -> None:
        self._raise_if_lost()
        if self.time_limit is not None and self.clock() - self._started > self.time_limit:
            raise JobTimeLimit(
                f"the job ran longer than its time limit of {self.time_limit:g} s "
                "(max_job_seconds); the operator can raise it with SLIMFORGE_MAX_JOB_SECONDS "
                "(or a smaller model, target or calibration set takes less time)"
            )
        now = time.monotonic()
        if now - self._last_check < self.check_interval:
            return
        self._last_check = now
        if self.cancel_requested():
            raise Cancelled("cancelled on request")

    def cancel_requested(self) -> bool:
        """Whether someone asked to cancel the job (read now, through a database outage)."""

        def read(_attempt: int) -> bool:
            with self.factory() as session:
                return lifecycle.is_cancel_requested(session, job_id=self.job_id)

        return self.db_retry(read, what="cancellation check")

    def enter(self, stage: str, *, cancellable: bool = True) -> None:
        """Record that the job is in ``stage`` now, then (unless the stage cannot be
        cancelled) stop the job if a cancel was requested."""
        self.stage = stage
        since = utcnow()

        def write(attempt: int) -> None:
            with self.factory() as session:
                # set_stage commits the stage and its "stage ... started" event together.
                if attempt > 1 and event_landed(
                    session, job_id=self.job_id, since=since, stage=stage
                ):
                    return
                lifecycle.set_stage(session, job_id=self.job_id, stage=stage)

        self.db_retry(write, what=f"stage {stage}")
        if cancellable:
            self.check_cancelled()
        else:
            self._raise_if_lost()

    def _raise_if_lost(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(self.job_id)
