"""An ``auto`` job through the API and the worker: kd is added when the body has none, the
candidates and the winner are in the events, the metrics and the model card, and kd trains
for the tokens auto left for it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from slimforge.app.settings import Settings
from slimforge.worker.runner import run_job
from tests.worker.test_runner import submit

AUTO = {
    "name": "auto",
    "architecture": "any",
    "candidates": ["mlp", "svd"],
    "probe_tokens": 64,
    "score_tokens": 128,
    "kd_tokens": 256,
}


def test_an_auto_job_names_its_candidates_and_winner(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    job_id = submit(api, h, tiny_model, text_files, method=AUTO)
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["request"]["distill"]["name"] == "kd"  # added, and shown
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    status = run_job(settings=settings, session_factory=factory, job_id=job_id)
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert status == "succeeded", job["error"]
    details = job["metrics"]["method_details"]
    assert details["winner"] == "svd"
    assert [r["status"] for r in details["candidates"]] == ["refused", "scored"]
    assert job["metrics"]["distill"]["tokens"] >= 256 > 0
    events = api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]
    messages = [e["message"] for e in events]
    assert "auto: chose svd" in messages and "auto: candidate mlp refused" in messages
    card = api.get(f"/v1/jobs/{job_id}/artifacts/README.md", headers=h)
    assert card.status_code == 200
    assert "How the pipeline was chosen (`auto`)" in card.text and "| svd |" in card.text
    assert "built again from the original model on all the calibration text" in card.text


def test_auto_refuses_a_target_no_candidate_reaches_at_submit(
    api: TestClient, auth, tiny_model: Path, text_files
) -> None:
    h = auth()
    from tests.builders import job_body

    body = job_body(tiny_model, text_files["calibration"], method={"name": "auto"})
    r = api.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 422, r.text
    assert "not reachable" in r.text


def test_auto_unreachable_names_auto_every_candidate_and_the_fix(
    api: TestClient, auth, tiny_model: Path, text_files
) -> None:
    from tests.builders import job_body

    body = job_body(tiny_model, text_files["calibration"], method={"name": "auto"})
    r = api.post("/v1/jobs", json=body, headers=auth())
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "method auto" in message and "architecture to 'any'" in message
    assert all(name in message for name in ("mlp", "width", "depth"))
    assert "mlp_multiple" not in message  # minitron's own fixes cannot be set in auto
