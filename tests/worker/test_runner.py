"""The runner's stages as plain functions on a tiny random Llama: no broker involved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from huggingface_hub import ModelCard
from sqlalchemy import select, update

from slimforge.app.jobs.models import Job
from slimforge.app.settings import Settings
from slimforge.worker.runner import run_job
from tests import builders
from tests.builders import job_body


def submit(
    api: TestClient, headers: dict[str, str], model: Path, files: dict[str, Path], **overrides: Any
) -> str:
    body = job_body(model, files["calibration"], files["evaluation"], **overrides)
    return builders.submit(api, headers, body)


def test_job_runs_every_stage_and_stores_metrics_and_artifact(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    (tiny_model / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    job_id = submit(api, h, tiny_model, text_files)
    factory = api.app.state.session_factory
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["status"] == "succeeded" and job["error"] is None
    m = job["metrics"]
    assert abs(m["params_after"] / m["target_params"] - 1) <= 0.01
    assert m["params_after"] < m["params_before"]
    assert m["teacher_perplexity"] > 1 and m["student_perplexity"] > 1
    assert set(m["stage_seconds"]) == {
        "loading",
        "calibrating",
        "compressing",
        "evaluating",
        "exporting",
        "storing",
    }
    assert m["peak_rss_bytes"] > 0 and m["artifact_bytes"] > 0 and m["tokens_used"] > 0
    assert m["ranks"] and all(r > 0 for r in m["ranks"].values())
    stages = [
        e["stage"]
        for e in api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]
        if e["message"].startswith("stage ")
    ]
    assert stages == ["loading", "calibrating", "compressing", "evaluating", "exporting", "storing"]
    files = {f["path"] for f in api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["files"]}
    assert {"config.json", "README.md", "generation_config.json", "tokenizer.json"} <= files
    assert any(f.endswith(".safetensors") for f in files)
    card = ModelCard(api.get(f"/v1/jobs/{job_id}/artifacts/README.md", headers=h).text)
    assert f"{m['params_after']:,}" in card.text
    assert card.data.license == "apache-2.0"  # inherited from the base model's card
    (result,) = [r for r in card.data.eval_results if r.metric_type == "perplexity"]
    assert result.metric_value == round(m["student_perplexity"], 4)


def test_a_redelivered_message_does_not_run_the_job_twice(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    job_id = submit(api, h, tiny_model, text_files)
    factory = api.app.state.session_factory
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    # The same message again (broker redelivery): nothing runs, nothing changes.
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) is None
    # A job whose lease is held by a live worker is left alone too.
    other = submit(api, h, tiny_model, text_files)
    with factory() as session:
        from slimforge.app.jobs.lifecycle import claim_job

        assert claim_job(session, job_id=other, owner="elsewhere", lease_seconds=600)
    assert run_job(settings=settings, session_factory=factory, job_id=other) is None
    with factory() as session:
        job = session.scalar(select(Job).where(Job.id == other))
        assert job is not None and job.status == "running" and job.lease_owner == "elsewhere"
        assert job.attempts == 1


def test_cancellation_is_honoured_and_partial_work_removed(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    job_id = submit(api, h, tiny_model, text_files)
    factory = api.app.state.session_factory
    # A cancel request that lands after the job was taken: the first check stops it.
    with factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
        session.commit()
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "cancelled"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["status"] == "cancelled"
    assert not (settings.artifacts_root / job_id).exists()
    assert api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).status_code == 404


def test_unreachable_target_fails_up_front_with_the_range(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    """The worker's own check, for models the API cannot inspect (e.g. Hub ids)."""
    h = auth()
    job_id = submit(api, h, tiny_model, text_files)
    factory = api.app.state.session_factory
    with factory() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        job.spec = {**job.spec, "target": {"params": 1000, "ratio": None}}
        session.commit()
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "failed"
    job_out = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert "reachable range" in job_out["error"] and job_out["stage"] == "loading"
    messages = [
        e["message"] for e in api.get(f"/v1/jobs/{job_id}/events", headers=h).json()["items"]
    ]
    assert "stage calibrating started" not in messages


def test_a_broken_model_fails_with_a_clear_error(
    api: TestClient, auth, settings: Settings, tmp_path: Path, text_files
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    h = auth()
    job_id = submit(api, h, broken, text_files)
    factory = api.app.state.session_factory
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["error"] and job["stage"] == "loading"
    events = api.get(f"/v1/jobs/{job_id}/events", headers=h).json()["items"]
    assert events[-1]["level"] == "error"


def test_lillama_job_runs_through_the_service_with_per_block_losses(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    method = {"name": "lillama", "max_steps_per_block": 3, "batch_size": 4}
    job_id = submit(api, h, tiny_model, text_files, method=method)
    factory = api.app.state.session_factory
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    m = job["metrics"]
    assert abs(m["params_after"] / m["target_params"] - 1) <= 0.01
    assert job["request"]["method"]["rank_strategy"] == "uniform"
    blocks = [
        e["data"]
        for e in api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]
        if e["stage"] == "compressing" and "loss_after" in e["data"]
    ]
    assert len(blocks) == 2  # one event per decoder layer, with its losses
    assert all(b["steps"] == 3 and b["loss_before"] > 0 for b in blocks)


@pytest.mark.parametrize("top_k", [None, 16])
def test_a_job_with_a_distillation_stage_records_its_curve(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files, top_k: int | None
) -> None:
    h = auth()
    # The guard is off: this checks the stage's record; tests/worker/test_kd_guard.py the guard.
    distill: dict[str, Any] = {
        "tokens": 1024,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "guard": False,
    }
    if top_k is not None:
        distill["top_k"] = top_k
    job_id = submit(api, h, tiny_model, text_files, distill=distill)
    factory = api.app.state.session_factory
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    m = job["metrics"]
    assert "distilling" in m["stage_seconds"]
    d = m["distill"]
    assert d["steps"] == 4 and d["tokens"] == 1024 and d["curve"][-1]["step"] == 4
    # The student was evaluated before and after the stage; the count did not change.
    assert m["perplexity_before_distill"] > 1 and m["student_perplexity"] > 1
    assert m["student_perplexity"] != m["perplexity_before_distill"]
    assert abs(m["params_after"] / m["target_params"] - 1) <= 0.01
    events = api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]
    steps = [e for e in events if e["message"] == "distillation step"]
    assert steps and all(e["stage"] == "distilling" for e in steps)
    assert "svd + kd" in api.get(f"/v1/jobs/{job_id}/artifacts/README.md", headers=h).text


def test_distillation_parameters_are_validated_at_submit(
    api: TestClient, auth, tiny_model: Path, text_files
) -> None:
    h = auth()
    body: dict[str, Any] = {
        "model": {"path": str(tiny_model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(text_files["calibration"])},
        "distill": {"top_k": 8, "hidden_weight": 1.0},
    }
    r = api.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 422 and "hidden_weight" in r.text
    body["distill"] = {"tokens": 100, "temprature": 2}
    r = api.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 422 and "temprature" in r.text


def test_a_minitron_job_exports_a_standard_architecture(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    method = {"name": "minitron", "hidden_multiple": 16, "mlp_multiple": 1, "search_tokens": 128}
    job_id = submit(api, h, tiny_model, text_files, method=method)
    factory = api.app.state.session_factory
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    m = job["metrics"]
    assert abs(m["params_after"] / m["target_params"] - 1) <= 0.01 and m["ranks"] == {}
    details = m["method_details"]
    assert details["candidates"] and details["shape"]["params"] == m["params_after"]
    events = api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]
    assert any(e["message"] == "candidate scored" for e in events)
    files = {f["path"] for f in api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["files"]}
    assert not any(f.endswith(".py") for f in files)  # no custom code to trust
    config = api.get(f"/v1/jobs/{job_id}/artifacts/config.json", headers=h).json()
    assert (
        "auto_map" not in config
        and config["num_hidden_layers"] == details["shape"]["num_hidden_layers"]
    )


def test_a_job_can_calibrate_and_distil_on_text_the_model_writes(
    api: TestClient, auth, settings: Settings, tiny_model: Path, text_files
) -> None:
    h = auth()
    calibration = {"synthetic": True, "max_tokens": 512, "seq_len": 64}
    job_id = submit(
        api, h, tiny_model, text_files, calibration=calibration, distill={"tokens": 256}
    )
    factory = api.app.state.session_factory
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    kd = job["metrics"]["distill"]
    assert job["metrics"]["tokens_used"] == 512
    # 4 kd blocks of 64: the guard holds one back, so 3 train, in whole batches of 3 (>= 256)
    assert kd["distinct_tokens"] == 192 and kd["tokens"] == 384 and kd["guard"]["tokens"] == 64
    events = api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()["items"]
    assert any(e["message"] == "sampled calibration text" for e in events)
