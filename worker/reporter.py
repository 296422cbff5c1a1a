"""A job's reporter: progress events, cancellation and time-limit checks, and the lease
heartbeat that tells other workers this one is alive."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.db import session_scope
from app.jobs import lifecycle
from app.jobs.service import add_event
from compression import Cancelled

__all__ = ["JobReporter", "JobTimeLimit", "LeaseLost", "ResourceLimit", "default_owner"]

log = logging.getLogger("slimforge.worker")


class LeaseLost(Exception):
    """Another worker took the job over (our lease expired): stop without touching it."""


class JobTimeLimit(Exception):
    """The job ran longer than ``max_job_seconds``: it fails."""


class ResourceLimit(Exception):
    """A resource limit (the tenant's model size quota, disk space) stops the job: it fails."""


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
    _started: float = field(default=0.0, init=False)
    _last_check: float = field(default=0.0, init=False)
    _lost: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._started = self.clock()

    def start_heartbeat(self) -> None:
        """Renew the lease every third of its length until :meth:`stop_heartbeat`."""

        def beat() -> None:
            while not self._stop.wait(self.lease_seconds / 3):
                try:
                    with self.factory() as session:
                        alive = lifecycle.renew_lease(
                            session,
                            job_id=self.job_id,
                            owner=self.owner,
                            lease_seconds=self.lease_seconds,
                        )
                except Exception:  # a database hiccup: try again at the next beat
                    log.exception("job %s: lease renewal failed", self.job_id)
                    continue
                if not alive:
                    self._lost.set()
                    return

        self._thread = threading.Thread(target=beat, name=f"lease-{self.job_id}", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def event(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        with session_scope(self.factory) as session:
            add_event(
                session,
                job_id=self.job_id,
                stage=self.stage,
                level=level,
                message=message,
                data=data,
            )
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
        with self.factory() as session:
            cancelled = lifecycle.is_cancel_requested(session, job_id=self.job_id)
        if cancelled:
            raise Cancelled("cancelled on request")

    def enter(self, stage: str) -> None:
        self.stage = stage
        with self.factory() as session:
            lifecycle.set_stage(session, job_id=self.job_id, stage=stage)
        self.check_cancelled()

    def _raise_if_lost(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(self.job_id)
