"""Input models with their own code: refused at submit unless the tenant is allowed
(``slimforge admin allow-remote-code``); without ``model.trust_remote_code`` a job fails with a
message that says what to set; with both, the worker loads and compresses the model with its code
(exporting a low-rank artifact of a class that is not transformers' own is refused, and said so)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from bench.tiny import save_tiny_llama
from slimforge.app.auth.service import set_remote_code
from slimforge.app.db import session_scope
from slimforge.app.jobs.models import Job
from slimforge.app.settings import Settings
from slimforge.worker.runner import run_job
from tests.worker.test_runner import submit

CONFIG_CODE = """
from transformers import LlamaConfig


class SfTinyConfig(LlamaConfig):
    model_type = "sf_tiny_custom"
"""

MODEL_CODE = """
from transformers import LlamaForCausalLM

from .configuration_sf import SfTinyConfig


class SfTinyForCausalLM(LlamaForCausalLM):
    config_class = SfTinyConfig
"""


def custom_code_model(folder: Path) -> Path:
    """A tiny Llama re-declared as an architecture transformers does not know: it loads only
    with trust_remote_code (its config's auto_map points at the two files written here)."""
    save_tiny_llama(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="sf_tiny_custom",
        architectures=["SfTinyForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_sf.SfTinyConfig",
            "AutoModelForCausalLM": "modeling_sf.SfTinyForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_sf.py").write_text(CONFIG_CODE)
    (folder / "modeling_sf.py").write_text(MODEL_CODE)
    return folder


def test_remote_code_needs_the_tenants_permission_and_the_flag(
    api: TestClient,
    auth: Callable[[str], dict[str, str]],
    settings: Settings,
    tmp_path: Path,
    text_files: dict[str, Path],
) -> None:
    h = auth("acme")
    model = custom_code_model(tmp_path / "custom")
    body = {
        "model": {"path": str(model), "trust_remote_code": True},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(text_files["calibration"]), "max_tokens": 4096},
    }
    refused = api.post("/v1/jobs", json=body, headers=h)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert "slimforge admin allow-remote-code --tenant acme" in error["message"]
    assert error["details"] == {"field": "model.trust_remote_code"}

    factory = api.app.state.session_factory
    # Without the flag the job is accepted, and its worker says what to set.
    plain = submit(api, h, model, text_files)
    assert run_job(settings=settings, session_factory=factory, job_id=plain) == "failed"
    with factory() as session:
        job = session.scalar(select(Job).where(Job.id == plain))
        assert job is not None and job.error is not None
        assert "ships its own model code" in job.error
        assert "set model.trust_remote_code to true" in job.error

    with session_scope(factory) as session:
        set_remote_code(session, tenant_name="acme", allowed=True)
    r = api.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 202, r.text
    allowed = r.json()["id"]
    # The worker now runs the model's code and loads it; a low-rank artifact of a class that
    # is not transformers' own (its remote-code files subclass the transformers class named in
    # the config) could not be exported, so the job fails at loading, before any compression,
    # with the exporter's own message (issue 15, case 12).
    assert run_job(settings=settings, session_factory=factory, job_id=allowed) == "failed"
    with factory() as session:
        job = session.scalar(select(Job).where(Job.id == allowed))
        assert job is not None and job.stage == "loading" and job.error is not None
        assert "SfTinyConfig is not a transformers class" in job.error
    stages = [
        e["stage"]
        for e in api.get(f"/v1/jobs/{allowed}/events?limit=1000", headers=h).json()["items"]
    ]
    assert "calibrating" not in stages and "exporting" not in stages

    with session_scope(factory) as session:  # forbidden again
        set_remote_code(session, tenant_name="acme", allowed=False)
    assert api.post("/v1/jobs", json=body, headers=h).status_code == 403
