"""A lillama job whose worker is killed (SIGKILL) resumes on another worker at the first
unfinished block and produces the same artifact as an uninterrupted run. Real processes on a
real Redis broker and PostgreSQL database."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from bench.tiny import save_tiny_llama
from slimforge.app.main import create_app
from slimforge.app.settings import Settings
from tests.builders import WORKER, job_body, process_env, running_process, wait_for_job
from tests.conftest import make_key
from tests.integration.deploy import migrated_settings

pytestmark = pytest.mark.services

LAYERS = 6


def _body(model: Path, calib: Path) -> dict[str, Any]:
    return job_body(
        model,
        calib,
        # Enough steps per block that the kill lands while later blocks are still training.
        method={"name": "lillama", "batch_size": 4, "epochs": 15, "learning_rate": 1e-4},
        calibration_tokens=2048,
        seq_len=64,
    )


def _messages(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"/v1/jobs/{job_id}/events?limit=1000").json()["items"]
    return items


def _weights(settings: Settings, job_id: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted((settings.artifacts_root / job_id).glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def test_killed_worker_resumes_at_the_first_unfinished_block(
    tmp_path: Path, redis_url: str, postgres_url: str, text_files: dict[str, Path]
) -> None:
    settings = migrated_settings(
        tmp_path,
        postgres_url=postgres_url,
        redis_url=redis_url,
        database="resume",
        lease_seconds=5,
    )
    model = save_tiny_llama(tmp_path / "tiny", layers=LAYERS)
    key = make_key(settings, "ci")
    app = create_app(settings)
    env = process_env(settings)
    body = _body(model, text_files["calibration"])
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        # Worker 1: kill -9 once it has checkpointed its first block.
        log1 = tmp_path / "worker1.log"
        with running_process(WORKER, env, log1) as first:
            deadline = time.monotonic() + 180
            while not any(
                e["message"] == "trained block model.layers.0" for e in _messages(client, job_id)
            ):
                assert time.monotonic() < deadline, log1.read_text()[-4000:]
                assert first.poll() is None, log1.read_text()[-4000:]
                time.sleep(0.1)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "running"  # nobody finished it: the worker just vanished
        assert (settings.work_root / job_id / "lillama" / "block_00000.safetensors").exists()

        # Worker 2 notices the expired lease, requeues the job and resumes it.
        log2 = tmp_path / "worker2.log"
        with running_process(WORKER, env, log2):
            job = wait_for_job(client, job_id, log2, timeout=300)
            assert job["status"] == "succeeded", (job["error"], log2.read_text()[-4000:])
            assert job["attempts"] == 2
            events = [e["message"] for e in _messages(client, job_id)]
            assert "worker lost (lease expired); job requeued and will resume" in events
            restart = events.index("job restarted (attempt 2)")
            after = events[restart:]
            resumed = [m for m in after if m.startswith("resumed block")]
            trained = [m for m in after if m.startswith("trained block")]
            assert resumed and resumed[0] == "resumed block model.layers.0"
            assert trained, "every block was already done: the kill came too late to test"
            assert len(resumed) + len(trained) == LAYERS
            # Nothing trained twice: the resumed blocks are exactly those done before the kill.
            before = [
                m.replace("trained", "resumed")
                for m in events[:restart]
                if m.startswith("trained block")
            ]
            assert resumed == before
            assert not (settings.work_root / job_id).exists()  # checkpoints cleaned up

            # The same request again, uninterrupted, on the same worker: the same weights.
            r = client.post("/v1/jobs", json=body)
            reference = wait_for_job(client, r.json()["id"], log2, timeout=300)
            assert reference["status"] == "succeeded" and reference["attempts"] == 1
        resumed_weights = _weights(settings, job_id)
        reference_weights = _weights(settings, reference["id"])
        assert resumed_weights.keys() == reference_weights.keys() and resumed_weights
        for name, tensor in reference_weights.items():
            assert torch.equal(resumed_weights[name], tensor), name
        assert job["metrics"]["params_after"] == reference["metrics"]["params_after"]
    app.state.engine.dispose()
