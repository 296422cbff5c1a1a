"""What a job measures: fidelity to the teacher, calibration/evaluation overlap, zero-shot tasks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from huggingface_hub import ModelCard, ModelCardData

from slimforge.app.settings import Settings
from slimforge.compression.generations import TEXT_PROMPTS
from slimforge.compression.overlap import ngram_overlap
from slimforge.worker.runner import run_job
from slimforge.worker.stages.calibrate import measure_overlap
from tests.compression.helpers import MC_TASK, mc_task_docs, write_mc_task


def _run(api: TestClient, settings: Settings, headers: dict[str, str], body: dict) -> dict:
    r = api.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    job = api.get(f"/v1/jobs/{job_id}", headers=headers).json()
    events = api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=headers).json()["items"]
    return {"job": job, "events": events}


def _body(model: Path, calibration: Path, evaluation: dict) -> dict:
    return {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(calibration), "max_tokens": 2048, "seq_len": 128},
        "evaluation": evaluation,
    }


def test_a_job_reports_fidelity_and_a_held_out_overlap(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    evaluation = {"path": str(text_files["evaluation"]), "max_tokens": 1024, "seq_len": 128}
    h = auth()
    out = _run(api, settings, h, _body(tiny_model, text_files["calibration"], evaluation))
    m = out["job"]["metrics"]
    f = m["fidelity"]
    assert f["teacher_perplexity"] == m["teacher_perplexity"] > 1
    assert f["student_perplexity"] == m["student_perplexity"] > 1
    assert m["perplexity_ratio"] == pytest.approx(f["student_perplexity"] / f["teacher_perplexity"])
    assert f["kl_per_token"] > 0 and 0 <= f["top1_agreement"] <= 1
    low, high = f["perplexity_ratio_interval"]
    assert low <= m["perplexity_ratio"] <= high
    assert f["protocol"]["window_tokens"] == 128
    # The shipped corpus is held out: the fixture takes its files' first characters.
    assert m["overlap"]["share"] <= 0.01 and m["overlap"]["ngram"] == 13
    messages = [e["message"] for e in out["events"]]
    assert "evaluation text is held out" in messages and "fidelity to the teacher" in messages
    samples = m["generations"]
    assert [s["prompt"] for s in samples] == list(TEXT_PROMPTS)
    assert all(isinstance(s["teacher"], str) and isinstance(s["student"], str) for s in samples)
    # The card's model-index carries the fidelity figures.
    card = api.get(f"/v1/jobs/{out['job']['id']}/artifacts/README.md", headers=h).text
    data = ModelCard(card).data
    assert isinstance(data, ModelCardData)
    results = {r.metric_type for r in data.eval_results or []}
    assert {"perplexity", "kl_divergence", "top1_agreement"} <= results


def test_evaluating_on_the_calibration_text_is_reported_as_overlap(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files, tmp_path: Path
) -> None:
    copy = tmp_path / "copy-of-calibration.txt"  # another file, the same text
    copy.write_text(text_files["calibration"].read_text() + "\n\nOne more paragraph.\n")
    evaluation = {"path": str(copy), "max_tokens": 1024, "seq_len": 128}
    out = _run(api, settings, auth(), _body(tiny_model, text_files["calibration"], evaluation))
    overlap = out["job"]["metrics"]["overlap"]
    assert overlap["share"] > 0.9 and overlap["longest_run_tokens"] >= 128
    warned = [e for e in out["events"] if e["message"].startswith("evaluation text overlaps")]
    assert warned and warned[0]["level"] == "warning"


def test_overlap_is_the_share_of_evaluation_13_grams_in_calibration_and_kd_text() -> None:
    calib = torch.arange(0, 64).reshape(2, 32)
    kd = torch.arange(100, 132).reshape(1, 32)
    evaluation = torch.cat([torch.arange(10, 42), torch.arange(100, 116), torch.arange(500, 516)])
    found = measure_overlap(evaluation.reshape(2, 32), [calib, kd])
    reference = torch.cat([calib.flatten(), kd.flatten()]).tolist()
    assert found["share"] == round(ngram_overlap(evaluation.tolist(), reference, n=13), 6)
    assert found["longest_run_tokens"] == 32 and 0 < found["share"] < 1


def test_a_job_runs_zero_shot_tasks_on_teacher_and_student(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files, tmp_path: Path
) -> None:
    folder = write_mc_task(tmp_path / "tasks", mc_task_docs(8))
    evaluation = {"tasks": [MC_TASK], "task_folders": [str(folder)], "limit": 8}
    h = auth()
    out = _run(api, settings, h, _body(tiny_model, text_files["calibration"], evaluation))
    m = out["job"]["metrics"]
    task = m["tasks"][MC_TASK]
    for side in ("teacher", "student"):
        assert 0 <= task[side]["acc"] <= 1 and task[side]["n_samples"] == 8
    assert task["limit"] == 8 and task["num_fewshot"] == 0  # the card states both
    card = api.get(f"/v1/jobs/{out['job']['id']}/artifacts/README.md", headers=h).text
    assert "at most 8 examples per task" in card and f"| {MC_TASK} | n_samples |" not in card
    if task["teacher"]["acc"] > 0:
        assert task["retention"] == pytest.approx(task["student"]["acc"] / task["teacher"]["acc"])
    assert "fidelity" not in m and "teacher_perplexity" not in m  # tasks alone: no text
    assert not math.isnan(task["student"]["acc_stderr"])


def test_an_unknown_task_fails_at_loading_before_any_compression(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files, tmp_path: Path
) -> None:
    folder = write_mc_task(tmp_path / "tasks", mc_task_docs(4))
    evaluation = {"tasks": ["no_such_task"], "task_folders": [str(folder)]}
    h = auth()
    body = _body(tiny_model, text_files["calibration"], evaluation)
    job_id = api.post("/v1/jobs", json=body, headers=h).json()["id"]
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["stage"] == "loading"
    assert job["error"].startswith("evaluation.tasks: unknown lm-eval task 'no_such_task'")
