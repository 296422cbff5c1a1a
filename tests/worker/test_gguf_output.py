"""GGUF as a job output (issue 18): a job on a tiny Llama writes GGUF files beside its
safetensors with llama.cpp's own tools; they are listed, checksummed, downloadable (also through
the Hub-compatible routes), named in the card, and llama.cpp (llama-cpp-python) runs them like
transformers runs the safetensors. A failing GGUF output keeps the safetensors artifact."""

from __future__ import annotations

import hashlib
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from huggingface_hub import ModelCard
from llama_cpp import Llama
from sqlalchemy import update
from transformers import AutoModelForCausalLM

from bench.tiny import save_tiny_llama
from slimforge.app.jobs.models import Job
from slimforge.app.settings import Settings
from slimforge.compression.gguf_export import CONVERTER_ENV, export_gguf, gguf_file_type
from slimforge.worker.runner import run_job
from tests import builders
from tests.builders import job_body
from tests.compression.gguf_helpers import hf_logits, llama_logits, save_gguf_ready_llama
from tests.hubserver import running_hub
from tests.worker.test_runner import submit

HUB_TOKEN = "hf_localtesttoken"
MINITRON = {"name": "minitron", "hidden_multiple": 16, "mlp_multiple": 1, "search_tokens": 128}
TYPES = ["f16", "q8_0"]
# llama.cpp on the f16 file vs transformers on the float32 safetensors (the same weights, which
# f16 holds exactly), relative to the largest logit: llama.cpp rounds activations to f16
# (rel. 2**-11) in its matmuls, and this model's activations are large (measured 4.4e-3).
LOGIT_REL_TOL = 1e-2
# f16 file vs transformers on the same held-out blocks: that rounding, averaged (measured 1e-4).
PPL_F16_REL_TOL = 1e-3
# q8_0 vs f16: llama.cpp's 8-bit blocks of 32 weights (measured 0.4 %).
PPL_Q8_REL_TOL = 0.015


def _events(api: TestClient, h: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(f"/v1/jobs/{job_id}/events?limit=1000", headers=h).json()[
        "items"
    ]
    return items


def _run(api: TestClient, settings: Settings, job_id: str) -> str | None:
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    return run_job(settings=settings, session_factory=factory, job_id=job_id)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    return save_gguf_ready_llama(tmp_path / "tiny-spm-llama")


def test_a_minitron_job_writes_gguf_files_llama_cpp_runs_like_transformers(
    api: TestClient, auth, settings: Settings, model_folder: Path, text_files, tmp_path: Path
) -> None:
    h = auth()
    output = {"formats": ["safetensors", "gguf"], "gguf_type": TYPES}
    job_id = submit(api, h, model_folder, text_files, method=MINITRON, output=output)
    assert _run(api, settings, job_id) == "succeeded"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["request"]["output"]["formats"] == ["safetensors", "gguf"]
    gguf = job["metrics"]["gguf"]
    names = [f["path"] for f in gguf["files"]]
    assert names == [f"tiny-spm-llama-slimforge.{t.upper()}.gguf" for t in TYPES]

    # Listed and checksummed like every file, downloadable from both APIs with those bytes.
    listed = {
        f["path"]: f for f in api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["files"]
    }
    assert any(p.endswith(".safetensors") for p in listed) and set(names) <= set(listed)
    tree = api.get(f"/api/models/acme/{job_id}/tree/main", headers=h).json()
    assert set(names) <= {entry["path"] for entry in tree}
    local: dict[str, Path] = {}
    for entry in gguf["files"]:
        body = api.get(f"/acme/{job_id}/resolve/main/{entry['path']}", headers=h).content
        assert len(body) == entry["size"] == listed[entry["path"]]["size"]
        assert hashlib.sha256(body).hexdigest() == listed[entry["path"]]["sha256"]
        local[entry["gguf_type"]] = tmp_path / entry["path"]
        local[entry["gguf_type"]].write_bytes(body)
        assert gguf_file_type(local[entry["gguf_type"]]) == entry["gguf_type"]
    assert listed[names[1]]["size"] < listed[names[0]]["size"]  # q8_0 under f16
    manifest = api.get(f"/v1/jobs/{job_id}/artifacts/manifest.json", headers=h).json()
    assert {f["path"] for f in manifest["files"]} | {"manifest.json"} == set(listed)

    # llama.cpp runs the f16 file as transformers runs the downloaded safetensors.
    artifact = tmp_path / "artifact"
    for path in listed:
        if not path.endswith(".gguf"):
            (artifact / path).parent.mkdir(parents=True, exist_ok=True)
            (artifact / path).write_bytes(
                api.get(f"/v1/jobs/{job_id}/artifacts/{path}", headers=h).content
            )
    hf = AutoModelForCausalLM.from_pretrained(artifact).eval()
    tokens = [1, *range(40, 140)]
    ref = hf_logits(hf, tokens)
    with closing(
        Llama(model_path=str(local["f16"]), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    ) as llm:
        got = llama_logits(llm, tokens)
    assert np.abs(got - ref).max() < LOGIT_REL_TOL * np.abs(ref).max()
    # The tolerance can fail: the unpruned source model is far outside it.
    source = hf_logits(AutoModelForCausalLM.from_pretrained(model_folder).eval(), tokens)
    assert np.abs(source - got).max() > 5 * LOGIT_REL_TOL * np.abs(ref).max()

    # Each file scored by llama.cpp on the held-out text, beside transformers on the same tokens.
    f16, q8 = gguf["files"]
    assert gguf["eval_tokens"] == job["metrics"]["evaluation_tokens"]
    assert f16["perplexity"] == pytest.approx(gguf["student_perplexity"], rel=PPL_F16_REL_TOL)
    assert q8["perplexity"] == pytest.approx(f16["perplexity"], rel=PPL_Q8_REL_TOL)
    # Both tolerances can fail: the unpruned teacher's perplexity is far outside them.
    assert abs(job["metrics"]["teacher_perplexity"] / f16["perplexity"] - 1) > 3 * PPL_Q8_REL_TOL

    card = ModelCard(api.get(f"/v1/jobs/{job_id}/artifacts/README.md", headers=h).text)
    assert "gguf" in card.data.to_dict()["tags"]
    for entry in gguf["files"]:
        assert (
            f"| `{entry['path']}` | {entry['gguf_type'].upper()} | {entry['size'] / 1e6:.1f} MB |"
            in card.text
        )
    assert f"llama-cli -m {names[-1]}" in card.text and "from llama_cpp import Llama" in card.text
    written = [
        e["data"]["gguf_type"]
        for e in _events(api, h, job_id)
        if e["message"] == "GGUF file written"
    ]
    assert written == TYPES


def test_a_gguf_that_fails_keeps_the_safetensors_artifact(
    api: TestClient, auth, settings: Settings, text_files, tmp_path: Path
) -> None:
    h = auth()
    # bench.tiny's character tokenizer (a WordLevel model) is no vocabulary llama.cpp knows:
    # the converter fails after compressing, when the artifact is exported.
    model = save_tiny_llama(tmp_path / "char-llama")
    output = {"formats": ["safetensors", "gguf"]}
    job_id = submit(api, h, model, text_files, method=MINITRON, output=output)
    assert _run(api, settings, job_id) == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["stage"] == "exporting" and job["request"]["output"]["gguf_type"] == ["f16"]
    assert "writing the GGUF output failed" in job["error"]
    assert "convert_hf_to_gguf.py" in job["error"]  # llama.cpp's own log, quoted
    assert f"GET /v1/jobs/{job_id}/artifacts" in job["error"]
    files = {f["path"] for f in api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["files"]}
    assert "model.safetensors" in files and not any(f.endswith(".gguf") for f in files)
    assert job["metrics"]["gguf"]["error"] and job["metrics"]["params_after"] > 0
    assert not list((settings.artifacts_root / job_id).glob("*.gguf"))
    # A worker lost between storing and failing the job: the job runs again, finds the stored
    # artifact and the GGUF error with it, and fails the same way instead of succeeding.
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
        session.commit()
    assert _run(api, settings, job_id) == "failed"
    again = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert "writing the GGUF output failed" in again["error"] and "hub" not in again["metrics"]


def test_a_worker_without_the_converter_fails_the_job_at_loading(
    api: TestClient,
    auth,
    settings: Settings,
    model_folder: Path,
    text_files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = auth()
    monkeypatch.setenv(CONVERTER_ENV, str(tmp_path / "no-converter"))
    output = {"gguf_type": "q4_k_m"}  # implies formats safetensors + gguf
    job_id = submit(api, h, model_folder, text_files, method=MINITRON, output=output)
    assert _run(api, settings, job_id) == "failed"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    entered = [e["stage"] for e in _events(api, h, job_id) if e["message"].startswith("stage ")]
    assert job["stage"] == "loading" and entered == ["loading"]  # before any compression
    assert "this worker cannot write GGUF files" in job["error"]
    assert "['safetensors']" in job["error"] and "output.formats" in job["error"]


def test_a_gguf_input_gets_a_gguf_of_its_own_type_by_default_pushed_with_the_rest(
    api: TestClient, auth, settings: Settings, model_folder: Path, text_files, tmp_path: Path
) -> None:
    h = auth()
    source = export_gguf(model_folder, tmp_path / "gguf-in" / "tiny.Q8_0.gguf", gguf_type="q8_0")
    body = job_body(
        source.parent, text_files["calibration"], text_files["evaluation"], method=MINITRON
    )
    body["model"]["gguf_file"] = source.name
    body["output"] = {"hub_repo": "acme/tiny-pruned"}  # nothing said about formats
    api.put("/v1/credentials/hub", json={"token": HUB_TOKEN}, headers=h)
    job_id = builders.submit(api, h, body)
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["request"]["output"]["formats"] == ["safetensors", "gguf"]
    assert job["request"]["output"]["gguf_type"] == ["q8_0"]  # read from the input's header
    with running_hub(tmp_path / "hub", token=HUB_TOKEN) as hub:
        hub_settings = settings.model_copy(update={"hub_endpoint": hub.endpoint})
        assert _run(api, hub_settings, job_id) == "succeeded"
        pushed = hub.files("acme/tiny-pruned")
    (entry,) = api.get(f"/v1/jobs/{job_id}", headers=h).json()["metrics"]["gguf"]["files"]
    assert entry["gguf_type"] == "q8_0" and entry["path"] == "tiny-pruned.Q8_0.gguf"
    stored = settings.artifacts_root / job_id / entry["path"]
    assert gguf_file_type(stored) == "q8_0"
    assert entry["size"] < source.stat().st_size  # pruned: smaller than the input, same type
    assert pushed[entry["path"]] == stored.read_bytes()  # on the Hub with the rest
    assert "llama-cli -hf acme/tiny-pruned:Q8_0" in pushed["README.md"].decode()


def test_a_default_gguf_output_a_worker_cannot_write_leaves_the_safetensors(
    api: TestClient,
    auth,
    settings: Settings,
    model_folder: Path,
    text_files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = auth()
    source = export_gguf(model_folder, tmp_path / "gguf-in" / "tiny.Q8_0.gguf", gguf_type="q8_0")
    body = job_body(
        source.parent, text_files["calibration"], text_files["evaluation"], method=MINITRON
    )
    body["model"]["gguf_file"] = source.name  # GGUF by default: not asked for
    job_id = builders.submit(api, h, body)
    monkeypatch.setenv(CONVERTER_ENV, str(tmp_path / "no-converter"))  # the demo's install
    assert _run(api, settings, job_id) == "succeeded"
    job = api.get(f"/v1/jobs/{job_id}", headers=h).json()
    assert job["metrics"]["gguf_by_default"] is True and "gguf" not in job["metrics"]
    files = {f["path"] for f in api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()["files"]}
    assert "model.safetensors" in files and not any(f.endswith(".gguf") for f in files)
    (warning,) = [e for e in _events(api, h, job_id) if e["level"] == "warning"]
    assert warning["message"].startswith("no GGUF output: this worker cannot write GGUF files")
