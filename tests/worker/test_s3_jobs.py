"""A job whose artifacts live in S3-compatible storage: stored, served with Range, pushed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.tiny import save_tiny_llama
from slimforge.app.settings import Settings
from slimforge.worker.runner import run_job
from tests.conftest import CORPUS
from tests.hubserver import running_hub
from tests.s3server import S3_ENV, running_s3


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, object]]:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    with running_s3() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, s3: tuple[str, object]) -> Settings:
    endpoint, _ = s3
    return Settings(
        home=tmp_path / "home",
        local_roots=[tmp_path, CORPUS],
        artifact_store_url="s3://artifacts/slimforge",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        publish_backoff_seconds=0.0,
    )


def test_job_artifact_in_s3_is_served_and_published(
    api: TestClient, auth, settings: Settings, s3, text_files, tmp_path: Path
) -> None:
    _, client = s3
    h = auth()
    model = save_tiny_llama(tmp_path / "tiny")
    factory = api.app.state.session_factory
    with running_hub(tmp_path / "hub", token="hf_s3test") as hub:
        hub_settings = settings.model_copy(update={"hub_endpoint": hub.endpoint})
        api.put("/v1/credentials/hub", json={"token": "hf_s3test"}, headers=h)
        body = {
            "model": {"path": str(model)},
            "target": {"ratio": 0.8},
            "method": {"name": "svd"},
            "calibration": {"path": str(text_files["calibration"]), "max_tokens": 2048},
            "output": {"hub_repo": "acme/from-s3"},
        }
        job_id = api.post("/v1/jobs", json=body, headers=h).json()["id"]
        assert run_job(settings=hub_settings, session_factory=factory, job_id=job_id) == (
            "succeeded"
        )
        pushed = hub.files("acme/from-s3")
    # Nothing on the local disk: every file is an object under the job's prefix.
    assert not (settings.artifacts_root / job_id).exists()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="artifacts")["Contents"]]
    assert keys and all(k.startswith(f"slimforge/{job_id}/") for k in keys)
    files = api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["files"]
    assert {f["path"] for f in files} == set(pushed)
    weights = next(f for f in files if f["path"].endswith(".safetensors"))
    url = f"/v1/jobs/{job_id}/artifacts/{weights['path']}"
    full = api.get(url, headers=h)
    assert full.status_code == 200 and hashlib.sha256(full.content).hexdigest() == weights["sha256"]
    assert full.headers["x-checksum-sha256"] == weights["sha256"]
    assert full.content == pushed[weights["path"]]  # published from S3, byte for byte
    part = api.get(url, headers={**h, "Range": "bytes=8-23"})
    assert part.status_code == 206 and part.content == full.content[8:24]
    assert part.headers["content-range"] == f"bytes 8-23/{weights['size']}"
    head = api.head(url, headers=h)
    assert head.status_code == 200 and head.headers["content-length"] == str(weights["size"])
    outside = api.get(url, headers={**h, "Range": f"bytes={weights['size'] + 5}-"})
    assert outside.status_code == 416


def test_a_damaged_s3_artifact_is_not_pushed(
    api: TestClient, auth, settings: Settings, s3, text_files, tmp_path: Path
) -> None:
    """Publishing checks every file against the manifest before any upload (issue 15, case 9):
    from S3 as from the local store."""
    _, client = s3
    h = auth()
    factory = api.app.state.session_factory
    with running_hub(tmp_path / "hub", token="hf_s3test") as hub:
        hub_settings = settings.model_copy(update={"hub_endpoint": hub.endpoint})
        api.put("/v1/credentials/hub", json={"token": "hf_wrong"}, headers=h)
        body = {
            "model": {"path": str(save_tiny_llama(tmp_path / "tiny"))},
            "target": {"ratio": 0.8},
            "method": {"name": "svd"},
            "calibration": {"path": str(text_files["calibration"]), "max_tokens": 2048},
            "output": {"hub_repo": "acme/from-s3"},
        }
        job_id = api.post("/v1/jobs", json=body, headers=h).json()["id"]
        assert run_job(settings=hub_settings, session_factory=factory, job_id=job_id) == "failed"
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="artifacts")["Contents"]]
        (config_key,) = [
            k for k in keys if k.startswith(f"slimforge/{job_id}/") and k.endswith("/config.json")
        ]
        client.put_object(Bucket="artifacts", Key=config_key, Body=b"{}")
        api.put("/v1/credentials/hub", json={"token": "hf_s3test"}, headers=h)
        assert api.post(f"/v1/jobs/{job_id}/publish", headers=h).status_code == 202
        assert run_job(settings=hub_settings, session_factory=factory, job_id=job_id) == "failed"
        job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
        assert job["stage"] == "publishing" and "'config.json'" in job["error"]
        assert "nothing was pushed" in job["error"]
        assert "acme/from-s3" not in hub.repos or not hub.commits("acme/from-s3")
