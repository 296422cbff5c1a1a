"""Calibration is optional: omitted, a job calibrates on the general mixture (issue 17, item 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from slimforge.compression.corpora import ENGLISH_CALIBRATION
from slimforge.contract.jobs import AUTO_KD_LEARNING_RATE
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


def test_null_calibration_is_the_general_mixture_too(api: TestClient, auth) -> None:
    status, job = submit(api, auth, body(calibration=None))
    assert status == 202, job
    assert job["request"]["calibration"]["mixture"] == "general"


STRAY = [  # a field only a Hub dataset (or a .jsonl file, for 'field') reads, on another source
    ({"mixture": "general", "split": "test"}, "'split'", "'mixture'"),
    ({"synthetic": True, "revision": "v1"}, "'revision'", "'synthetic'"),
    ({"mixture": "general", "field": "body"}, "'field'", "'mixture'"),
    ({"path": str(CORPUS / "calibration.txt"), "config_name": "en"}, "'config_name'", "'path'"),
    ({"path": str(CORPUS / "calibration.txt"), "field": "body"}, "'field'", "'path'"),
]


@pytest.mark.parametrize(("calibration", "field", "source"), STRAY)
def test_a_field_the_source_does_not_read_is_refused_not_ignored(
    api: TestClient, auth, calibration: dict[str, Any], field: str, source: str
) -> None:
    status, error = submit(api, auth, body(calibration=calibration))
    assert status == 422, error
    message = error["error"]["message"]
    assert field in message and source in message and "leave it out" in message


def test_a_jsonl_file_may_name_its_text_field(api: TestClient, auth, tmp_path: Path) -> None:
    rows = tmp_path / "calib.jsonl"
    rows.write_text('{"body": "some text to calibrate on"}\n')
    calibration = {"path": str(rows), "field": "body"}
    status, job = submit(api, auth, body(calibration=calibration))
    assert status == 202, job
    assert job["request"]["calibration"]["field"] == "body"


def test_auto_needs_two_calibration_blocks_at_submit(api: TestClient, auth) -> None:
    calibration = {"mixture": "general", "max_tokens": 600, "seq_len": 512}
    status, error = submit(api, auth, body(method={"name": "auto"}, calibration=calibration))
    assert status == 422, error
    message = error["error"]["message"]
    assert "calibration.max_tokens = 600" in message and "at least 1024" in message
    calibration["max_tokens"] = 1024
    status, job = submit(api, auth, body(method={"name": "auto"}, calibration=calibration))
    assert status == 202, job


def test_auto_with_a_partial_distill_draws_the_default_kd_text(api: TestClient, auth) -> None:
    """A ``distill`` section without ``tokens`` gets the same kd text as no section at all."""
    _, plain = submit(api, auth, body(method={"name": "auto"}))
    _, partial = submit(api, auth, body(method={"name": "auto"}, distill={"learning_rate": 1e-4}))
    _, given = submit(api, auth, body(method={"name": "auto"}, distill={"tokens": 4096}))
    tokens = [job["request"]["distill"]["tokens"] for job in (plain, partial, given)]
    assert tokens[0] == tokens[1] != 4096 and tokens[2] == 4096
    rates = [job["request"]["distill"]["learning_rate"] for job in (plain, partial, given)]
    assert rates == [AUTO_KD_LEARNING_RATE, 1e-4, AUTO_KD_LEARNING_RATE]
    # auto's probes train at the rate of the kd they stand for, unless the method sets one
    probes = [job["request"]["method"]["probe_learning_rate"] for job in (plain, partial, given)]
    assert probes == rates
    method = {"name": "auto", "probe_learning_rate": 3e-4}
    _, own = submit(api, auth, body(method=method, distill={"learning_rate": 1e-4}))
    assert own["request"]["method"]["probe_learning_rate"] == 3e-4
