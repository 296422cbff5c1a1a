"""``slimforge serve`` notices that its worker died: kill -9 the worker child during a job (what
the kernel's out-of-memory killer does); serve logs the signal, ``/readyz`` reports the worker
missing, the job's events say its worker was lost, a new worker starts and the interrupted
job finishes. Embedded mode: SQLite, the file-system broker, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.services import free_port
from bench.tiny import save_tiny_llama
from slimforge.app.settings import Settings
from tests.builders import job_body, process_env, running_process, wait_for_job

pytestmark = pytest.mark.slow


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"/v1/jobs/{job_id}/events?limit=1000").json()["items"]
    return items


def _until(condition: Any, log: Path, timeout: float = 180, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(step)


def test_serve_restarts_a_killed_worker_and_the_job_finishes(
    tmp_path: Path, text_files: dict[str, Path]
) -> None:
    env = process_env(Settings(home=tmp_path / "home", local_roots=[tmp_path]))
    key = subprocess.run(
        [sys.executable, "-m", "slimforge.cli", "admin", "create-key", "--tenant", "ci"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    model = save_tiny_llama(tmp_path / "tiny", layers=4)
    # Enough steps per block that the kill lands while later blocks are still training.
    body = job_body(
        model,
        text_files["calibration"],
        method={"name": "lillama", "batch_size": 4, "epochs": 15, "learning_rate": 1e-4},
        calibration_tokens=2048,
        seq_len=64,
    )
    port, log = free_port(), tmp_path / "serve.log"
    serve = [sys.executable, "-m", "slimforge.cli", "serve", "--port", str(port)]
    with (
        running_process(serve, env, log),
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as client,
    ):
        _until(lambda: _ready(client), log, timeout=120, step=0.3)
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        _until(
            lambda: any(e["message"].startswith("trained block") for e in _events(client, job_id)),
            log,
        )
        started = next(e for e in _events(client, job_id) if e["message"] == "job started")
        worker = int(started["data"]["worker"].rsplit(":", 1)[1])
        os.kill(worker, signal.SIGKILL)

        # /readyz says the worker is missing until serve has started another.
        missing = _until(lambda: _missing(client), log, timeout=30, step=0.05)
        assert missing.startswith(f"missing: process {worker} killed by SIGKILL"), missing
        job = wait_for_job(client, job_id, log, timeout=300)
        assert job["status"] == "succeeded", (job["error"], log.read_text()[-4000:])
        assert job["attempts"] == 2
        messages = [e["message"] for e in _events(client, job_id)]
        lost = f"worker lost: worker 'jobs' process {worker} killed by SIGKILL; "
        assert lost + "the job will be requeued" in messages
        assert "worker lost (lease expired); job requeued and will resume" in messages
        assert "job restarted (attempt 2)" in messages
        assert any(m.startswith("resumed block") for m in messages)
        assert client.get("/readyz").status_code == 200
    assert f"process {worker} killed by SIGKILL" in log.read_text()


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def _missing(client: httpx.Client) -> str | None:
    checks: dict[str, str] = client.get("/readyz").json()["checks"]
    state = checks.get("worker:jobs", "ok")
    return None if state == "ok" else state
