"""Limits the worker enforces: the job time limit, disk space before exporting, and the
tenant's model size quota for models the API could not read at submit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import session_scope
from app.limits.quotas import set_tenant_quota
from app.settings import Settings
from tests.tiny import save_tiny_llama
from worker.runner import run_job


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return save_tiny_llama(tmp_path / "tiny-llama")


def submit(api: TestClient, headers: dict[str, str], model: Path, files: dict[str, Path]) -> str:
    body: dict[str, Any] = {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(files["calibration"]), "max_tokens": 2048, "seq_len": 128},
    }
    r = api.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_a_job_past_max_job_seconds_fails_saying_the_limit(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    job_id = submit(api, h, tiny_model, text_files)
    settings.max_job_seconds = 60
    start = time.monotonic()

    def fast_clock() -> float:  # a thousand seconds per real second: 60 s pass in 60 ms
        return (time.monotonic() - start) * 1000

    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    status = run_job(settings=settings, session_factory=factory, job_id=job_id, clock=fast_clock)
    assert status == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["status"] == "failed"
    assert "time limit of 60 s" in job["error"]
    assert "SLIMFORGE_MAX_JOB_SECONDS" in job["error"]
    assert api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).status_code == 404
    assert not (settings.work_root / job_id).exists()


def test_a_job_within_its_time_limit_is_unaffected(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    job_id = submit(api, h, tiny_model, text_files)
    settings.max_job_seconds = 60
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"


def test_not_enough_disk_space_fails_before_exporting(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    job_id = submit(api, h, tiny_model, text_files)
    settings.min_free_disk_bytes = 10**18  # an exabyte to keep free: no disk has that
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["status"] == "failed" and job["stage"] == "exporting"
    error = job["error"]
    assert error.startswith("not enough disk space to export the artifact")
    assert str(settings.work_root) in error
    assert "bytes needed" in error and " free" in error and "min_free_disk_bytes" in error
    assert api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).status_code == 404


def test_the_worker_checks_the_model_size_quota_after_loading(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth("acme")
    job_id = submit(api, h, tiny_model, text_files)  # no quota at submit
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    with session_scope(factory) as session:
        set_tenant_quota(session, tenant_name="acme", max_model_params=1000)
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["stage"] == "loading"
    assert "more than this tenant's limit of 1,000 (max_model_params)" in job["error"]
