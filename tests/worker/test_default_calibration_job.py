"""A job without ``calibration`` calibrates and distils on the general mixture, and a second
job on the same model takes the sampled text from the worker's cache (issue 17, item 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from slimforge.app.settings import Settings
from slimforge.worker.runner import run_job
from tests import builders
from tests.builders import job_body


def run(api: TestClient, h: dict[str, str], settings: Settings, body: dict[str, Any]) -> str:
    job_id = builders.submit(api, h, body)
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    return job_id


def events(api: TestClient, h: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    return api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]


def test_a_job_without_calibration_uses_the_general_mixture_and_the_cache(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    body = job_body(tiny_model, text_files["calibration"], text_files["evaluation"])
    del body["calibration"]  # the default: the general mixture, 32,768 tokens of 512
    body["distill"] = {"tokens": 2048}
    first = run(api, h, settings, body)
    job = api.get(f"/v1/jobs/{first}", headers=h).json()
    calibration = job["metrics"]["calibration"]
    assert calibration["source"] == "general mixture"
    assert calibration["english_tokens"] == calibration["synthetic_tokens"] > 0
    assert calibration["tokens"] == job["metrics"]["tokens_used"]
    assert job["metrics"]["overlap"]["reference_tokens"] > 0  # measured against the mixture
    sampled = [e for e in events(api, h, first) if e["message"] == "sampled calibration text"]
    assert sampled and sampled[0]["stage"] == "calibrating" and sampled[0]["data"]["total"] > 0
    cached = list((settings.cache_root / "synthetic").glob("*.safetensors"))
    assert len(cached) == 1
    card = api.get(f"/v1/jobs/{first}/artifacts/README.md", headers=h).text
    assert "general-purpose mixture" in card and "general English" in card
    # The same model again: its text comes from the cache, nothing is sampled.
    second = run(api, h, settings, body)
    again = [
        e["data"] for e in events(api, h, second) if e["message"] == "sampled calibration text"
    ]
    assert again and all(d["cached_tokens"] == d["total"] for d in again)
    assert list((settings.cache_root / "synthetic").glob("*.safetensors")) == cached
    assert api.get(f"/v1/jobs/{second}", headers=h).json()["metrics"]["calibration"] == calibration
