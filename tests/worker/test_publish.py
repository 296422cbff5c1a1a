"""The publishing stage against a local Hub-protocol server, with the real huggingface_hub."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from bench.tiny import save_tiny_llama
from slimforge.app.settings import Settings
from slimforge.compression.progress import RecordingReporter
from slimforge.worker.publish import PublishError, _with_retries
from slimforge.worker.runner import run_job
from tests.hubserver import running_hub

HUB_TOKEN = "hf_localtesttoken"


def submit(api: TestClient, h: dict[str, str], model: Path, files: dict[str, Path]) -> str:
    body = {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(files["calibration"]), "max_tokens": 2048, "seq_len": 128},
        "evaluation": {"path": str(files["evaluation"]), "max_tokens": 1024, "seq_len": 128},
        "output": {"hub_repo": "acme/tiny-slim", "commit_message": "compressed by slimforge"},
    }
    r = api.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_job_pushes_its_artifact_and_card_and_a_failed_push_is_retried(
    api: TestClient, auth, settings: Settings, text_files, tmp_path: Path
) -> None:
    h = auth()
    model = save_tiny_llama(tmp_path / "tiny")
    factory = api.app.state.session_factory
    with running_hub(tmp_path / "hub", token=HUB_TOKEN) as hub:
        hub_settings = settings.model_copy(
            update={"hub_endpoint": hub.endpoint, "publish_backoff_seconds": 0.0}
        )
        # A token the Hub refuses: the job fails at "publishing" and keeps its artifact.
        api.put("/v1/credentials/hub", json={"token": "hf_wrongtoken"}, headers=h)
        job_id = submit(api, h, model, text_files)
        assert run_job(settings=hub_settings, session_factory=factory, job_id=job_id) == "failed"
        job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
        assert job["stage"] == "publishing" and "401" in job["error"]
        assert f"POST /v1/jobs/{job_id}/publish" in job["error"]
        assert "hf_wrongtoken" not in json.dumps(job)
        events = api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).text
        assert "hf_wrongtoken" not in events
        files = api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["files"]
        assert any(f["path"].endswith(".safetensors") for f in files)
        assert job["metrics"]["student_perplexity"] > 1  # stored with the artifact
        assert hub.repos == {} or "acme/tiny-slim" not in hub.repos

        # Fix the token, publish again: only the push runs.
        api.put("/v1/credentials/hub", json={"token": HUB_TOKEN}, headers=h)
        r = api.post(f"/v1/jobs/{job_id}/publish", headers=h)
        assert r.status_code == 202 and r.json()["status"] == "queued"
        assert run_job(settings=hub_settings, session_factory=factory, job_id=job_id) == "succeeded"
        job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
        messages = [
            e["message"]
            for e in api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]
        ]
        assert "artifact already stored; continuing from there" in messages
        assert messages.count("stage compressing started") == 1  # not compressed twice
        pushed = job["metrics"]["hub"]
        assert pushed["repo_id"] == "acme/tiny-slim" and pushed["revision"] == "main"
        (commit,) = hub.commits("acme/tiny-slim")
        assert (
            commit["message"] == "compressed by slimforge" and commit["id"] == pushed["commit_oid"]
        )
        assert hub.repo("acme/tiny-slim").private

        # Every file of the artifact is on the Hub, byte for byte, weights through LFS.
        stored = hub.files("acme/tiny-slim")
        assert {f["path"] for f in files} == set(stored)
        for f in files:
            body = api.get(f"/v1/jobs/{job_id}/artifacts/{f['path']}", headers=h).content
            assert stored[f["path"]] == body, f["path"]
        assert any(p.endswith(".safetensors") for p in hub.lfs_paths("acme/tiny-slim"))
        card = ModelCard(stored["README.md"].decode())
        assert 'path = "acme/tiny-slim"' in card.text
        assert card.data.eval_results[0].metric_value == round(
            job["metrics"]["student_perplexity"], 4
        )
        # A worker that died after pushing (the job requeued) does not push twice.
        with factory() as session:
            from sqlalchemy import update

            from slimforge.app.jobs.models import Job

            session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
            session.commit()
        assert run_job(settings=hub_settings, session_factory=factory, job_id=job_id) == "succeeded"
        assert len(hub.commits("acme/tiny-slim")) == 1
        # And it downloads back with the stock client.
        folder = snapshot_download(
            "acme/tiny-slim", endpoint=hub.endpoint, token=HUB_TOKEN, cache_dir=tmp_path / "c"
        )
        assert (Path(folder) / "config.json").read_bytes() == stored["config.json"]


def _http_error(status: int) -> HfHubHTTPError:
    request = httpx.Request("POST", "http://127.0.0.1/api/repos/create")
    return HfHubHTTPError(f"{status} error", response=httpx.Response(status, request=request))


def test_retries_back_off_on_5xx_and_stop_at_once_on_4xx() -> None:
    calls, sleeps = [], []
    reporter = RecordingReporter()

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _http_error(503)
        return "ok"

    result = _with_retries(
        flaky, what="uploading", repo_id="a/b", attempts=4, backoff=1.5,
        reporter=reporter, secret="hf_x", sleep=sleeps.append,
    )  # fmt: skip
    assert result == "ok" and len(calls) == 3 and sleeps == [1.5, 3.0]
    assert [m for _, m, _ in reporter.events] == [
        "uploading failed, retrying in 1.5 s",
        "uploading failed, retrying in 3 s",
    ]

    def refused() -> str:
        raise _http_error(403)

    with pytest.raises(PublishError, match="no write access to 'a/b'"):
        _with_retries(
            refused, what="uploading", repo_id="a/b", attempts=4, backoff=1.0,
            reporter=reporter, secret="hf_x", sleep=sleeps.append,
        )  # fmt: skip
    assert sleeps == [1.5, 3.0]  # a 4xx is not retried

    def leaky() -> str:
        raise ConnectionError("cannot reach https://hub/?token=hf_x")

    with pytest.raises(PublishError) as err:
        _with_retries(
            leaky, what="uploading", repo_id="a/b", attempts=2, backoff=0.0,
            reporter=reporter, secret="hf_x", sleep=sleeps.append,
        )  # fmt: skip
    assert "hf_x" not in str(err.value) and "***" in str(err.value)
