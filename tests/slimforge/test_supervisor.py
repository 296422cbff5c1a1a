"""``slimforge serve``'s supervisor: a child killed with SIGKILL is logged with its signal,
reported, and started again after a backoff; ``/readyz`` shows it missing meanwhile."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from slimforge.cli.supervisor import Supervisor, describe_exit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_describe_exit_names_the_signal() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGTERM) == "killed by SIGTERM"
    assert describe_exit(3) == "exited with status 3"


def test_a_killed_child_is_logged_reported_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exits: list[tuple[str, int, str]] = []
    supervisor = Supervisor(
        {"jobs": SLEEPER},
        on_exit=lambda *args: exits.append(args),
        backoff_seconds=0.5,
        poll_seconds=0.05,
    )
    caplog.set_level(logging.ERROR, logger="slimforge.serve")
    supervisor.start()
    try:
        first = supervisor.pids()["jobs"]
        assert first is not None and supervisor.status() == {"worker:jobs": "ok"}
        os.kill(first, signal.SIGKILL)
        _until(lambda: bool(exits))
        assert exits == [("jobs", first, f"process {first} killed by SIGKILL")]
        status = supervisor.status()["worker:jobs"]
        assert status.startswith(f"missing: process {first} killed by SIGKILL; restarting in")
        assert any("killed by SIGKILL" in r.getMessage() for r in caplog.records)
        _until(lambda: supervisor.pids()["jobs"] not in (None, first))
        second = supervisor.pids()["jobs"]
        assert supervisor.status() == {"worker:jobs": "ok"}
        # A second quick death waits twice as long before the restart.
        os.kill(second, signal.SIGKILL)
        _until(lambda: len(exits) == 2)
        assert "restarting in 1.0 s" in caplog.records[-1].getMessage()
    finally:
        supervisor.stop(timeout=5)
    assert all(pid is None or not _running(pid) for pid in supervisor.pids().values())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


class _Workers:
    def __init__(self, status: dict[str, str]) -> None:
        self._status = status

    def status(self) -> dict[str, str]:
        return self._status


def test_readyz_reports_a_missing_worker(api: TestClient, tmp_path: Path) -> None:
    assert api.get("/readyz").json()["checks"].keys() == {"database", "broker"}  # no serve
    missing = "missing: process 7 killed by SIGKILL; restarting in 2 s"
    api.app.state.workers = _Workers({"worker:jobs": missing})  # type: ignore[attr-defined]
    r = api.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["worker:jobs"] == missing
    api.app.state.workers = _Workers({"worker:jobs": "ok"})  # type: ignore[attr-defined]
    assert api.get("/readyz").status_code == 200
