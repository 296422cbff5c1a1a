"""PostgreSQL stops for a few seconds while a job runs (a real fast shutdown, then a restart on
the same port and data folder): the worker retries its database reads and writes, the job ends
``succeeded`` on its first attempt with every progress event recorded once, and the worker
goes on to run the next job. Real worker process, real Redis and PostgreSQL (its own server:
the shared one of the other tests is never stopped).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.services import PostgresServer
from bench.tiny import save_tiny_llama
from slimforge.app.main import create_app
from tests.builders import WORKER, job_body, process_env, running_process, wait_for_job
from tests.conftest import make_key
from tests.integration.deploy import migrated_settings

pytestmark = pytest.mark.services

LAYERS = 4
OUTAGE_SECONDS = 4.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def _body(model: Path, calib: Path, evaluation: Path) -> dict[str, Any]:
    return job_body(
        model,
        calib,
        evaluation,
        # Enough training steps per block that the job is mid-way through compressing, with
        # progress events and cancellation checks to write and read, while the database is down.
        method={"name": "lillama", "batch_size": 4, "epochs": 40, "learning_rate": 1e-4},
        calibration_tokens=2048,
        evaluation_tokens=1024,
        seq_len=64,
    )


def _events(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"/v1/jobs/{job_id}/events?limit=1000").json()["items"]
    return items


def test_a_running_job_rides_out_a_database_restart(
    tmp_path: Path, redis_url: str, own_postgres: PostgresServer, text_files: dict[str, Path]
) -> None:
    settings = migrated_settings(
        tmp_path,
        postgres_url=own_postgres.url,
        redis_url=redis_url,
        database="outage",
        rate_limit_per_minute=0,
        # A lease (12 s, renewed every 4 s) that outlives the outage only if renewal resumes
        # soon after the restart; a bounded retry well above the outage.
        lease_seconds=12,
        db_retry_seconds=60,
    )
    model = save_tiny_llama(tmp_path / "tiny", layers=LAYERS)
    key = make_key(settings, "ci")
    env = process_env(settings)
    body = _body(model, text_files["calibration"], text_files["evaluation"])
    app = create_app(settings)
    log = tmp_path / "worker.log"
    with (
        TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client,
        running_process(WORKER, env, log) as worker,
    ):
        job_id = client.post("/v1/jobs", json=body).json()["id"]
        deadline = time.monotonic() + 180
        while not any(e["message"] == "stage compressing started" for e in _events(client, job_id)):
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            assert worker.poll() is None, log.read_text()[-4000:]
            time.sleep(0.05)

        own_postgres.stop()  # every connection of the worker (and the API) is cut
        time.sleep(OUTAGE_SECONDS)
        assert worker.poll() is None, log.read_text()[-4000:]
        own_postgres.start()

        job = wait_for_job(client, job_id, log, timeout=300)
        text = log.read_text()
        assert job["status"] == "succeeded", (job["error"], text[-4000:])
        assert job["attempts"] == 1, text[-4000:]  # retried in place, not lost and requeued
        # The outage did reach the worker's database calls (and they were retried).
        assert "database unavailable" in text, text[-4000:]

        messages = [str(e["message"]) for e in _events(client, job_id)]
        stages = [m.split()[1] for m in messages if m.startswith("stage ")]
        assert stages == [
            "loading",
            "calibrating",
            "compressing",
            "evaluating",
            "exporting",
            "storing",
        ], messages
        # Every block's progress event is there, once: none lost, none written twice.
        for i in range(LAYERS):
            assert messages.count(f"trained block model.layers.{i}") == 1, messages
        assert messages.count("job started") == 1, messages
        assert messages[-1] == "job succeeded", messages
        assert not [m for m in messages if "worker lost" in m or "restarted" in m], messages
        assert job["metrics"]["params_after"] <= job["metrics"]["target_params"] * 1.01

        # The same worker process serves the next job (a quick one).
        assert worker.poll() is None, text[-4000:]
        second = client.post("/v1/jobs", json={**body, "method": {"name": "svd"}}).json()["id"]
        done = wait_for_job(client, second, log, timeout=300)
        assert done["status"] == "succeeded", (done["error"], log.read_text()[-4000:])
        assert done["attempts"] == 1
        assert worker.poll() is None
        assert client.get("/v1/jobs?status=running").json()["items"] == []
    app.state.engine.dispose()
