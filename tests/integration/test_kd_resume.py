"""kill -9 the worker in the middle of the ``kd`` stage: the next worker resumes the
distillation from its last saved state (not from step 0) and the job ends with the same
weights as an uninterrupted run. Real worker processes, Redis and PostgreSQL."""

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
from tests.integration.test_crash_points import _events, _weight_digests

pytestmark = pytest.mark.services

STEPS = 200  # distillation steps; a progress event every 10


def test_a_worker_killed_while_distilling_resumes_from_its_saved_state(
    tmp_path: Path, redis_url: str, postgres_url: str, text_files: dict[str, Path]
) -> None:
    settings = migrated_settings(
        tmp_path,
        postgres_url=postgres_url,
        redis_url=redis_url,
        database="kd_resume",
        lease_seconds=5,
        rate_limit_per_minute=0,
        kd_checkpoint_seconds=0,  # save after every step
    )
    model = save_tiny_llama(tmp_path / "tiny", layers=4)
    key = make_key(settings, "ci")
    env = process_env(settings)
    body: dict[str, Any] = {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(text_files["calibration"]), "max_tokens": 4096, "seq_len": 128},
        "distill": {"tokens": STEPS * 4 * 128, "batch_size": 4},
    }
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
        killed = client.post("/v1/jobs", json=body).json()["id"]
        log = tmp_path / "killed.log"
        with running_process(WORKER, env, log) as worker:
            deadline = time.monotonic() + 120
            while "distillation step" not in _events(client, killed):
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                assert worker.poll() is None, log.read_text()[-4000:]
                time.sleep(0.02)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        job = client.get(f"/v1/jobs/{killed}").json()
        assert job["status"] == "running" and job["stage"] == "distilling", job

        log = tmp_path / "survivor.log"
        with running_process(WORKER, env, log):
            reference = client.post("/v1/jobs", json=body).json()["id"]
            for job_id in (killed, reference):
                job = wait_for_job(client, job_id, log, timeout=300)
                assert job["status"] == "succeeded", (job["error"], log.read_text()[-4000:])
        items = client.get(f"/v1/jobs/{killed}/events?limit=1000").json()["items"]
        (resumed,) = [e for e in items if e["message"].startswith("distillation resumed")]
        assert 0 < resumed["data"]["step"] < STEPS  # from where it was, not from step 0
        assert "distillation resumed" not in " ".join(_events(client, reference))
        assert client.get(f"/v1/jobs/{killed}").json()["attempts"] == 2
        assert _weight_digests(client, killed) == _weight_digests(client, reference)
        # Checkpoints only serve a restart: nothing is left in the scratch folder.
        assert not (settings.work_root / killed).exists()
