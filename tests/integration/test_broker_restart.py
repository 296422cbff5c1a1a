"""Redis restarts, with jobs queued and with one running: no job is lost and none runs twice.

Redis runs as production runs it (docker-compose.yml: append-only file on), so queued and
unacknowledged messages survive the restart; the job lease keeps a redelivered message from
running a job a second time. Real processes, real Redis and PostgreSQL.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.services import _wait_port, free_port
from bench.tiny import save_tiny_llama
from slimforge.app.main import create_app
from tests.builders import WORKER, process_env, running_process, wait_for_job
from tests.conftest import make_key
from tests.integration.deploy import migrated_settings

pytestmark = pytest.mark.services


class PersistentRedis:
    """A Redis with its append-only file in ``folder``, restartable on the same port."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server not found: run scripts/setup.sh --dev"
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Redis flushes the append-only file and exits
            self.proc.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def persistent_redis(folder: Path) -> Iterator[PersistentRedis]:
    folder.mkdir()
    server = PersistentRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _starts(client: TestClient, job_id: str) -> int:
    """How many times a worker started the job (each claim writes one such event)."""
    events = client.get(f"/v1/jobs/{job_id}/events?limit=1000").json()["items"]
    return sum(e["message"].startswith(("job started", "job restarted")) for e in events)


def test_redis_restarts_lose_no_job_and_run_none_twice(
    tmp_path: Path, postgres_url: str, text_files: dict[str, Path]
) -> None:
    model = save_tiny_llama(tmp_path / "tiny", layers=4)
    with persistent_redis(tmp_path / "redis") as redis:
        settings = migrated_settings(
            tmp_path,
            postgres_url=postgres_url,
            redis_url=redis.url,
            database="broker_restart",
        )
        key = make_key(settings, "ci")
        app = create_app(settings)
        env = process_env(settings)
        body: dict[str, Any] = {
            "model": {"path": str(model)},
            "target": {"ratio": 0.8},
            "calibration": {"path": str(text_files["calibration"]), "max_tokens": 2048},
        }
        long_job = {**body, "method": {"name": "lillama", "epochs": 20, "batch_size": 4}}
        quick = {**body, "method": {"name": "svd"}}
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            # 1. Jobs queued while no worker runs; Redis restarts under them.
            queued = [client.post("/v1/jobs", json=quick).json()["id"] for _ in range(2)]
            running = client.post("/v1/jobs", json=long_job).json()["id"]
            queued.append(client.post("/v1/jobs", json=quick).json()["id"])
            redis.restart()
            log = tmp_path / "worker.log"
            with running_process(WORKER, env, log) as worker:
                # 2. Restart it again while the long job runs (its message unacknowledged).
                deadline = time.monotonic() + 180
                while client.get(f"/v1/jobs/{running}").json()["stage"] != "compressing":
                    assert time.monotonic() < deadline, log.read_text()[-4000:]
                    assert worker.poll() is None, log.read_text()[-4000:]
                    time.sleep(0.1)
                redis.restart()
                for job_id in [*queued, running]:
                    job = wait_for_job(client, job_id, log, timeout=300)
                    assert job["status"] == "succeeded", (job["error"], log.read_text()[-4000:])
                time.sleep(2)  # time for a duplicate delivery, if there were one, to start
                for job_id in [*queued, running]:
                    job = client.get(f"/v1/jobs/{job_id}").json()
                    assert job["attempts"] == 1 and _starts(client, job_id) == 1, job_id
        app.state.engine.dispose()
