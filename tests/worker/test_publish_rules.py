"""Publishing checks the stored files before any upload, from either store (issue 15, case 9),
and is not cancellable: a cancel that arrives once the artifact is stored is reported as too
late and the job ends succeeded (case 10)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.tiny import save_tiny_llama
from slimforge.app.settings import Settings
from slimforge.worker import runner
from slimforge.worker.runner import run_job
from slimforge.worker.stages import STAGES
from slimforge.worker.stages import publish as publish_stage
from slimforge.worker.stages import store as store_stage
from tests.hubserver import running_hub
from tests.worker.test_publish import HUB_TOKEN, submit

TOO_LATE = "cancel requested too late"


def _messages(api: TestClient, h: dict[str, str], job_id: str) -> list[str]:
    items = api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]
    return [e["message"] for e in items]


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda folder: (folder / "config.json").write_text("{}"), "config.json"),
        (lambda folder: (folder / "tokenizer.json").unlink(), "tokenizer.json"),
        (lambda folder: (folder / "extra.bin").write_bytes(b"x"), "extra.bin"),
    ],
)
def test_a_damaged_local_artifact_is_not_pushed(
    api: TestClient,
    auth,
    settings: Settings,
    text_files,
    tmp_path: Path,
    damage: Callable[[Path], object],
    named: str,
) -> None:
    h = auth()
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    with running_hub(tmp_path / "hub", token=HUB_TOKEN) as hub:
        hub_settings = settings.model_copy(
            update={"hub_endpoint": hub.endpoint, "publish_backoff_seconds": 0.0}
        )
        api.put("/v1/credentials/hub", json={"token": "hf_wrongtoken"}, headers=h)
        job_id = submit(api, h, save_tiny_llama(tmp_path / "tiny"), text_files)
        assert run_job(settings=hub_settings, session_factory=factory, job_id=job_id) == "failed"
        damage(settings.artifacts_root / job_id)  # the stored copy changes on disk
        api.put("/v1/credentials/hub", json={"token": HUB_TOKEN}, headers=h)
        assert api.post(f"/v1/jobs/{job_id}/publish", headers=h).status_code == 202
        assert run_job(settings=hub_settings, session_factory=factory, job_id=job_id) == "failed"
        job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
        assert job["stage"] == "publishing" and f"'{named}'" in job["error"]
        assert "nothing was pushed" in job["error"]
        assert "acme/tiny-slim" not in hub.repos or not hub.commits("acme/tiny-slim")


@pytest.mark.parametrize("arrives", ["after storing", "during the push"])
def test_a_cancel_once_the_artifact_is_stored_is_too_late(
    api: TestClient,
    auth,
    settings: Settings,
    text_files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arrives: str,
) -> None:
    h = auth()
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    job_id = ""

    def cancel() -> None:
        r = api.post(f"/v1/jobs/{job_id}/cancel", headers=h)
        assert r.status_code in (200, 202), r.text

    if arrives == "after storing":

        def store_then_cancel(ctx: Any) -> None:
            store_stage.run(ctx)
            cancel()

        stages = tuple(
            replace(s, run=store_then_cancel) if s.name == "storing" else s for s in STAGES
        )
        monkeypatch.setattr(runner, "STAGES", stages)
    else:
        real_publish = publish_stage.publish_artifact

        def cancel_then_push(**kwargs: Any) -> dict[str, Any]:
            cancel()
            return real_publish(**kwargs)

        monkeypatch.setattr(publish_stage, "publish_artifact", cancel_then_push)
    with running_hub(tmp_path / "hub", token=HUB_TOKEN) as hub:
        hub_settings = settings.model_copy(update={"hub_endpoint": hub.endpoint})
        api.put("/v1/credentials/hub", json={"token": HUB_TOKEN}, headers=h)
        job_id = submit(api, h, save_tiny_llama(tmp_path / "tiny"), text_files)
        status = run_job(settings=hub_settings, session_factory=factory, job_id=job_id)
        assert status == "succeeded"
        job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
        assert job["status"] == "succeeded" and job["cancel_requested"]
        assert job["metrics"]["hub"]["repo_id"] == "acme/tiny-slim"
        assert len(hub.commits("acme/tiny-slim")) == 1
        messages = _messages(api, h, job_id)
        assert any(m.startswith(TOO_LATE) for m in messages)
        assert "stage publishing started" in messages
        assert api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).status_code == 200
