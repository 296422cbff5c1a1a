"""Ride out a short database outage (a restart, a fail-over, a dropped connection) in the
middle of a job: the worker's reads and writes around a job are retried with backoff for a
bounded time (``db_retry_seconds``) instead of failing a job that is otherwise fine.

Every try must open its own session: after a lost connection the old one is unusable, and
SQLAlchemy has invalidated it (and, with ``pool_pre_ping``, checks the others before use).
A retried write must be safe to repeat, since the commit of a try that reported a lost
connection may have landed; callers get the try number to check for that
(see ``JobReporter.event`` and ``runner.run_job``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

__all__ = ["is_transient", "retry_db"]

log = logging.getLogger("slimforge.worker")

T = TypeVar("T")

FIRST_DELAY = 0.25  # seconds before the second try; doubled after each failure ...
MAX_DELAY = 5.0  # ... up to this: a restarted server is found within a few seconds


def is_transient(exc: BaseException) -> bool:
    """Whether another try may succeed: the server is unreachable, shut down or dropped the
    connection (an OperationalError, or any DBAPI error SQLAlchemy took for a disconnect).

    Errors in the statement or the data (IntegrityError, ProgrammingError, DataError, ...) and
    application errors would fail the same way again: they are not transient.
    """
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def retry_db(
    action: Callable[[int], T],
    *,
    what: str,
    seconds: float,
    stop: threading.Event | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``action(try_number)`` (1 for the first) until it returns, retrying transient
    database errors (:func:`is_transient`) with exponential backoff for up to ``seconds``;
    returns its result.

    After ``seconds`` (0: no retry) the last error is raised, as it would have been without
    retrying; any other exception is raised at once. ``what`` names the operation in the logs.
    ``stop``, when set, ends the waiting early and raises the last error (a heartbeat thread
    being stopped must not wait out the outage).
    """
    deadline = clock() + seconds
    delay = FIRST_DELAY
    tries = 0
    while True:
        tries += 1
        try:
            result = action(tries)
        except Exception as exc:
            if not is_transient(exc):
                raise
            left = deadline - clock()
            if left <= 0:
                if seconds > 0:
                    log.error(
                        "database unavailable for %s after %d tries over %g s; giving up: %s",
                        what,
                        tries,
                        seconds,
                        _short(exc),
                    )
                raise
            if tries == 1:
                log.warning(
                    "database unavailable for %s; retrying for up to %g s: %s",
                    what,
                    seconds,
                    _short(exc),
                )
            pause = min(delay, left)
            if stop is not None:
                if stop.wait(pause):
                    raise
            else:
                sleep(pause)
            delay = min(delay * 2, MAX_DELAY)
            continue
        if tries > 1:
            log.info("database back: %s done after %d tries", what, tries)
        return result


def _short(exc: BaseException) -> str:
    """The driver's message on one line, without SQLAlchemy's statement and background link."""
    original = getattr(exc, "orig", None) or exc
    return " ".join(str(original).split())[:300]
