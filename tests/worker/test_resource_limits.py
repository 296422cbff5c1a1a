"""Limits the worker enforces: the job time limit, disk space before exporting, and the
tenant's model size quota for models the API could not read at submit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from slimforge.app.db import session_scope
from slimforge.app.limits.quotas import set_tenant_quota
from slimforge.app.settings import Settings
from slimforge.worker.runner import run_job
from tests import builders
from tests.builders import job_body


def submit(api: TestClient, headers: dict[str, str], model: Path, files: dict[str, Path]) -> str:
    body = job_body(model, files["calibration"], calibration_tokens=2048)
    return builders.submit(api, headers, body)


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


def _allocate_too_much() -> None:
    """A real failed allocation from PyTorch's CPU allocator (4 EiB), not a raised imitation."""
    torch.empty(1 << 62, dtype=torch.uint8)


def _cuda_out_of_memory() -> None:
    # What CUDA's caching allocator raises; no GPU here, so the error is built.
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.mark.parametrize("fail", [_allocate_too_much, _cuda_out_of_memory])
def test_out_of_memory_fails_the_job_saying_what_to_change_and_the_worker_goes_on(
    api: TestClient,
    auth,
    settings: Settings,
    tiny_model: Path,
    text_files,
    monkeypatch: pytest.MonkeyPatch,
    fail,
) -> None:
    from slimforge.worker.stages import compress as job_runner

    h = auth("acme")
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    real_compress = job_runner.compress

    def compress_out_of_memory(*args: Any, **kwargs: Any) -> Any:
        fail()
        return real_compress(*args, **kwargs)

    monkeypatch.setattr(job_runner, "compress", compress_out_of_memory)
    job_id = submit(api, h, tiny_model, text_files)
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["stage"] == "compressing"
    assert job["error"].startswith("out of memory: use a smaller calibration batch")
    assert "activation_memory_gb" in job["error"] and "top_k" in job["error"]
    # The same worker process takes its next job as usual.
    monkeypatch.setattr(job_runner, "compress", real_compress)
    next_job = submit(api, h, tiny_model, text_files)
    assert run_job(settings=settings, session_factory=factory, job_id=next_job) == "succeeded"
