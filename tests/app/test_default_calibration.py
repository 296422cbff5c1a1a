"""Calibration is optional: omitted, a job calibrates on the general mixture (issue 17, item 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from slimforge.compression.corpora import ENGLISH_CALIBRATION
from tests.builders import SMOLLM2_HUB

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"


def body(**sections: Any) -> dict[str, Any]:
    spec = {"model": SMOLLM2_HUB, "target": {"ratio": 0.8}, "method": {"name": "svd"}}
    return {**spec, **sections}


def submit(api: TestClient, auth, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    r = api.post("/v1/jobs", json=spec, headers=auth())
    return r.status_code, r.json()


def test_omitted_calibration_is_the_general_mixture(api: TestClient, auth) -> None:
    status, job = submit(api, auth, body())
    assert status == 202, job
    calibration = job["request"]["calibration"]
    assert calibration["mixture"] == "general" and calibration["synthetic_share"] is None
    assert not calibration["synthetic"] and calibration["path"] is None
    # The default spelled out is the same job (one request hash for idempotent replays).
    headers = {**auth(), "Idempotency-Key": "same-job"}
    first = api.post("/v1/jobs", json=body(), headers=headers)
    again = api.post("/v1/jobs", json=body(calibration={"mixture": "general"}), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_an_explicit_mixture_keeps_its_share_and_budget(api: TestClient, auth) -> None:
    calibration = {"mixture": "general", "synthetic_share": 0.25, "max_tokens": 8192}
    status, job = submit(api, auth, body(calibration=calibration))
    assert status == 202, job
    stored = job["request"]["calibration"]
    assert (stored["synthetic_share"], stored["max_tokens"]) == (0.25, 8192)


def test_the_mixtures_english_text_is_not_held_out(api: TestClient, auth) -> None:
    """The shipped English calibration text (under its data/corpus name) as evaluation text."""
    evaluation = {"path": str(CORPUS / ENGLISH_CALIBRATION.name)}
    status, error = submit(api, auth, body(evaluation=evaluation))
    assert status == 422, error
    assert error["error"]["details"]["field"] == "evaluation"
    assert "the general mixture" in error["error"]["message"]
    # Sampled text only (share 1) reads no English: the file is held out then.
    only_sampled = {"mixture": "general", "synthetic_share": 1.0}
    status, job = submit(api, auth, body(calibration=only_sampled, evaluation=evaluation))
    assert status == 202, job
    # The held-out partner is accepted with the default.
    held_out = {"path": str(CORPUS / "english-evaluation.txt")}
    status, job = submit(api, auth, body(evaluation=held_out))
    assert status == 202, job
