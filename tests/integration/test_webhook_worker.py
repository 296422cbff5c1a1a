"""A delivery worker (``slimforge worker --webhooks``) delivers webhooks from their own queue
while no job worker is free, and takes no job. Real worker process, Redis and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from slimforge.app.main import create_app
from slimforge.app.settings import Settings
from tests.builders import WORKER, process_env, running_process
from tests.conftest import make_key
from tests.integration.deploy import migrated_settings
from tests.worker.test_webhooks_delivery import new_secret, receiver

pytestmark = pytest.mark.services


def test_a_delivery_worker_delivers_while_no_job_worker_runs(
    tmp_path: Path, redis_url: str, postgres_url: str, text_files: dict[str, Path]
) -> None:
    queue = f"webhooks-{uuid.uuid4().hex[:8]}"  # its own queues on the shared test Redis
    settings = migrated_settings(
        tmp_path,
        postgres_url=postgres_url,
        redis_url=redis_url,
        database="webhook_worker",
        queue_name=f"gpu-{queue}",
        webhook_queue=queue,
        webhook_allow_private_addresses=True,  # the receiver is on loopback
        rate_limit_per_minute=0,
    )
    key = make_key(settings, "ci")
    env = process_env(settings)  # its queues and the private-address setting included
    h = {"Authorization": f"Bearer {key}"}
    body = {
        "model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct"},  # never loaded: no job runs
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(text_files["calibration"])},
    }
    log = tmp_path / "webhooks.log"
    with (
        TestClient(create_app(settings)) as api,
        receiver(new_secret(api, h), [200]) as hook,
        running_process([*WORKER, "--webhooks"], env, log),
    ):
        waiting = api.post("/v1/jobs", json=body, headers=h).json()["id"]
        cancelled = api.post(
            "/v1/jobs", json={**body, "webhook": {"url": hook.url}}, headers=h
        ).json()["id"]
        # Cancelling a queued job sends job.cancelled at once: the delivery worker delivers it.
        assert api.post(f"/v1/jobs/{cancelled}/cancel", headers=h).status_code == 202
        deadline = time.monotonic() + 60
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hook.received, f"nothing delivered; worker log:\n{log.read_text()[-3000:]}"
        (delivery,) = hook.received
        assert delivery["verified"] and delivery["payload"]["type"] == "job.cancelled"
        assert delivery["payload"]["data"]["id"] == cancelled
        # The other job's message sits on the GPU queue: the delivery worker took no job.
        time.sleep(1)
        assert api.get(f"/v1/jobs/{waiting}", headers=h).json()["status"] == "queued"
    assert "slimforge-webhooks-" in log.read_text()  # it ran as a delivery worker


def test_a_delivery_worker_without_its_own_queue_refuses_to_start(tmp_path: Path) -> None:
    from slimforge.worker.main import start_worker

    with pytest.raises(SystemExit, match="SLIMFORGE_WEBHOOK_QUEUE"):
        start_worker(Settings(home=tmp_path), deliveries=True)
