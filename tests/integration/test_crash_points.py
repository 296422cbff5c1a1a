"""kill -9 the worker in different stages of a job: another worker picks the job up and ends
it with the same weights (sha256 of every weight file) as an uninterrupted run, and no job is
left running. Real worker processes, real Redis and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.tiny import save_tiny_llama
from slimforge.app.main import create_app
from tests.builders import WORKER, process_env, running_process, wait_for_job
from tests.conftest import make_key
from tests.integration.deploy import migrated_settings

pytestmark = pytest.mark.services

# Where the kill lands: the first event of the stage (the stage is then under way).
KILL_AT = (
    "stage loading started",
    "stage calibrating started",
    "stage compressing started",
    "stage exporting started",
)  # publishing: tests/integration/test_publish_crash.py


def _weight_digests(client: TestClient, job_id: str) -> dict[str, str]:
    files = client.get(f"/v1/jobs/{job_id}/artifacts").json()["files"]
    return {f["path"]: f["sha256"] for f in files if f["path"].endswith(".safetensors")}


def _events(client: TestClient, job_id: str) -> list[str]:
    items = client.get(f"/v1/jobs/{job_id}/events?limit=1000").json()["items"]
    return [str(e["message"]) for e in items]


def test_a_worker_killed_in_any_stage_leaves_the_same_result(
    tmp_path: Path, redis_url: str, postgres_url: str, text_files: dict[str, Path]
) -> None:
    settings = migrated_settings(
        tmp_path,
        postgres_url=postgres_url,
        redis_url=redis_url,
        database="crash_points",
        lease_seconds=5,
        rate_limit_per_minute=0,
    )
    model = save_tiny_llama(tmp_path / "tiny", layers=4)
    key = make_key(settings, "ci")
    env = process_env(settings)
    body: dict[str, Any] = {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},  # deterministic: the same weights bit for bit
        "calibration": {"path": str(text_files["calibration"]), "max_tokens": 4096},
        "evaluation": {"path": str(text_files["evaluation"]), "max_tokens": 2048},
    }
    app = create_app(settings)
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        killed: dict[str, str] = {}
        for n, moment in enumerate(KILL_AT):
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            log = tmp_path / f"killed-{n}.log"
            with running_process(WORKER, env, log) as worker:
                deadline = time.monotonic() + 120
                while moment not in _events(client, job_id):
                    assert time.monotonic() < deadline, log.read_text()[-4000:]
                    assert worker.poll() is None, log.read_text()[-4000:]
                    time.sleep(0.02)
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "running", job  # the worker vanished mid-job
            killed[job_id] = str(job["stage"])

        # One worker finds every orphan once its lease expires, finishes it, then the
        # reference job runs uninterrupted.
        log = tmp_path / "survivor.log"
        with running_process(WORKER, env, log):
            reference_id = client.post("/v1/jobs", json=body).json()["id"]
            for job_id in [*killed, reference_id]:
                job = wait_for_job(client, job_id, log, timeout=300)
                assert job["status"] == "succeeded", (job["error"], log.read_text()[-4000:])
        reference = _weight_digests(client, reference_id)
        assert reference
        for job_id, stage in killed.items():
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["attempts"] == 2, (stage, job["attempts"])
            assert "worker lost (lease expired); job requeued and will resume" in _events(
                client, job_id
            )
            assert _weight_digests(client, job_id) == reference, stage
        # The kills landed in the stages they aimed at (or just after a fast one ended).
        assert len(set(killed.values())) >= 2, killed
        assert client.get("/v1/jobs?status=running").json()["items"] == []
    app.state.engine.dispose()
