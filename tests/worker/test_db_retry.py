"""The worker rides out a database outage: ``retry_db`` retries connection errors with backoff
for a bounded time and nothing else; a job whose database keeps dropping connections (before a
statement runs, or after a commit landed) still ends once, with each event written once."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bench.tiny import save_tiny_llama
from slimforge.app.db import make_engine, make_session_factory
from slimforge.app.jobs.models import Job, JobEvent
from slimforge.app.settings import Settings
from slimforge.worker import db_retry
from slimforge.worker.db_retry import is_transient, retry_db
from slimforge.worker.reporter import JobReporter
from slimforge.worker.runner import run_job
from tests.worker.test_runner import submit


def lost(message: str = "server closed the connection unexpectedly") -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception(message))


class FakeTime:
    """A clock that only sleeping moves; records every pause."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def failing(
    times: int, error: Callable[[], Exception] = lost
) -> tuple[Callable[[int], str], list[int]]:
    """An action that raises ``error()`` on its first ``times`` tries; and the tries seen."""
    tries: list[int] = []

    def action(attempt: int) -> str:
        tries.append(attempt)
        if len(tries) <= times:
            raise error()
        return "done"

    return action, tries


def test_connection_errors_are_retried_with_backoff_until_it_works() -> None:
    t = FakeTime()
    action, tries = failing(2)
    assert retry_db(action, what="test", seconds=60, sleep=t.sleep, clock=t.clock) == "done"
    assert tries == [1, 2, 3]  # the action learns which try it is (to check an earlier commit)
    assert t.pauses == [0.25, 0.5]


def test_it_gives_up_after_the_time_bound_with_the_last_error() -> None:
    t = FakeTime()
    action, tries = failing(10_000)
    with pytest.raises(OperationalError):
        retry_db(action, what="test", seconds=20, sleep=t.sleep, clock=t.clock)
    # Doubling up to 5 s, the last pause cut short: the whole bound waited, no longer.
    assert t.pauses == [0.25, 0.5, 1, 2, 4, 5, 5, 2.25]
    assert len(tries) == len(t.pauses) + 1  # a last try at the deadline


def test_zero_seconds_does_not_retry() -> None:
    t = FakeTime()
    action, tries = failing(1)
    with pytest.raises(OperationalError):
        retry_db(action, what="test", seconds=0, sleep=t.sleep, clock=t.clock)
    assert tries == [1] and t.pauses == []


@pytest.mark.parametrize(
    "error",
    [
        lambda: IntegrityError("INSERT", {}, Exception("duplicate key")),
        lambda: ValueError("a bad spec"),
        lambda: InterfaceError("SELECT 1", {}, Exception("bad parameter")),
    ],
    ids=["integrity", "application", "interface-not-a-disconnect"],
)
def test_other_errors_are_raised_at_once(error: Callable[[], Exception]) -> None:
    t = FakeTime()
    action, tries = failing(1, error)
    with pytest.raises(type(error())):
        retry_db(action, what="test", seconds=60, sleep=t.sleep, clock=t.clock)
    assert tries == [1] and t.pauses == []


def test_any_dbapi_error_taken_for_a_disconnect_is_transient() -> None:
    closed = InterfaceError("SELECT 1", {}, Exception("the connection is closed"))
    assert not is_transient(closed)
    closed.connection_invalidated = True
    assert is_transient(closed)
    assert is_transient(lost()) and not is_transient(RuntimeError("x"))


def test_a_stop_event_ends_the_wait_with_the_error() -> None:
    stop = threading.Event()
    stop.set()
    action, tries = failing(10_000)
    with pytest.raises(OperationalError):
        retry_db(action, what="heartbeat", seconds=3600, stop=stop)
    assert tries == [1]


def test_ending_the_job_stops_a_heartbeat_that_waits_for_the_database() -> None:
    tried = threading.Event()

    def unreachable() -> Session:
        tried.set()
        raise lost("connection refused")

    reporter = JobReporter(
        cast("sessionmaker[Session]", unreachable), "job_x", "me:1", 1, db_retry_seconds=600
    )
    reporter.start_heartbeat()
    assert tried.wait(10)  # renewing, and retrying for up to 600 s
    started = time.monotonic()
    reporter.stop_heartbeat()
    assert time.monotonic() - started < 2


# --- a whole job against a database that keeps dropping connections -------------------------


class Faults:
    """Every ``every_statement``-th statement fails before it runs (the connection is gone).
    A commit lands and then fails (its answer lost on the way) the first time it writes an
    event with a given message (the claim, each stage, each progress event, the final status),
    and otherwise every ``every_commit``-th time (the manifest, metrics, lease renewals)."""

    def __init__(self, *, every_statement: int, every_commit: int) -> None:
        self.statements = itertools.count(1)
        self.commits = itertools.count(1)
        self.every_statement, self.every_commit = every_statement, every_commit
        self.before, self.after = 0, 0
        self.seen: set[str] = set()

    def factory(self, engine: Engine) -> sessionmaker[Session]:
        """Sessions on ``engine`` (which gets the statement faults) with the commit faults."""
        faults = self

        @event.listens_for(engine, "before_cursor_execute")
        def _drop(*_args: Any) -> None:
            if next(faults.statements) % faults.every_statement == 0:
                faults.before += 1
                raise lost("connection refused")

        class FlakySession(Session):
            def commit(self) -> None:
                messages = {o.message for o in self.new if isinstance(o, JobEvent)}
                first = bool(messages - faults.seen)
                faults.seen |= messages
                super().commit()
                if first or next(faults.commits) % faults.every_commit == 0:
                    faults.after += 1
                    raise lost("server closed the connection unexpectedly (after COMMIT)")

        return sessionmaker(bind=engine, class_=FlakySession, expire_on_commit=False)


def test_a_job_on_a_flaky_database_ends_once_with_each_event_once(
    api: TestClient,
    auth: Callable[[str], dict[str, str]],
    settings: Settings,
    tmp_path: Path,
    text_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db_retry, "FIRST_DELAY", 0.001)  # the retries without the waits
    emitted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "slimforge.worker.webhooks.emit", lambda **kw: emitted.append((kw["job_id"], kw["event"]))
    )
    model = save_tiny_llama(tmp_path / "tiny")
    h = auth("acme")
    healthy, flaky_engine = make_engine(settings.database_url), make_engine(settings.database_url)
    factory = make_session_factory(healthy)

    def events(job_id: str) -> list[tuple[str | None, str]]:
        with factory() as session:
            rows = session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            )
            return [(e.stage, e.message) for e in rows]

    # The same job on a healthy database: the events to expect.
    clean = submit(api, h, model, text_files)
    assert run_job(settings=settings, session_factory=factory, job_id=clean) == "succeeded"

    faults = Faults(every_statement=7, every_commit=3)
    flaky = submit(api, h, model, text_files)
    try:
        result = run_job(
            settings=settings, session_factory=faults.factory(flaky_engine), job_id=flaky
        )
    finally:
        flaky_engine.dispose()
    assert result == "succeeded"
    assert faults.before > 5 and faults.after > 20  # both kinds of fault did happen
    with factory() as session:
        job = session.scalar(select(Job).where(Job.id == flaky))
        assert job is not None
        assert job.status == "succeeded" and job.attempts == 1 and job.error is None
        assert job.metrics["params_after"] > 0 and job.finished_at is not None
    # Not one event lost or written twice, the final one included.
    assert events(flaky) == events(clean)
    assert events(flaky)[-1] == ("storing", "job succeeded")
    # The claim and the final status were taken as done although their commits "failed":
    # the job's webhooks went out, once each.
    assert [e for j, e in emitted if j == flaky] == ["job.started", "job.succeeded"]
    healthy.dispose()


def test_a_webhook_event_survives_a_dropped_connection_and_is_recorded_once(
    api: TestClient,
    auth: Callable[[str], dict[str, str]],
    settings: Settings,
    tmp_path: Path,
    text_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first commit of the delivery row lands and then reports a lost connection, the next
    statement fails before it runs: ``emit`` retries, finds the row that landed, and queues
    that one delivery (before, the event was dropped with a logged error)."""
    from slimforge.app.webhooks.models import WebhookDelivery
    from slimforge.worker.webhooks import emit

    monkeypatch.setattr(db_retry, "FIRST_DELAY", 0.001)
    settings.webhook_allow_private_addresses = True
    h = auth("acme")
    secret = api.post("/v1/webhooks/secret", headers=h)
    assert secret.status_code == 201
    hook = {"url": "http://127.0.0.1:9/hook", "events": ["job.succeeded"]}
    job_id = submit(api, h, save_tiny_llama(tmp_path / "tiny"), text_files, webhook=hook)
    engine = make_engine(settings.database_url)
    state = {"committed": 0, "dropped": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def _drop(*_args: Any) -> None:
        if state["committed"] == 1 and not state["dropped"]:  # right after the lost commit
            state["dropped"] = 1
            raise lost("connection refused")

    class FlakySession(Session):
        def commit(self) -> None:
            writes = any(isinstance(o, WebhookDelivery) for o in self.new)
            super().commit()
            if writes and not state["committed"]:
                state["committed"] = 1
                raise lost("server closed the connection unexpectedly (after COMMIT)")

    sent: list[int] = []
    try:
        ids = emit(
            settings=settings,
            session_factory=sessionmaker(bind=engine, class_=FlakySession),
            job_id=job_id,
            event="job.succeeded",
            send=sent.append,
        )
    finally:
        engine.dispose()
    assert state == {"committed": 1, "dropped": 1}  # both faults did happen
    with api.app.state.session_factory() as session:
        rows = session.scalars(
            select(WebhookDelivery.id).where(WebhookDelivery.job_id == job_id)
        ).all()
    assert len(rows) == 1 and ids == sent == list(rows)
