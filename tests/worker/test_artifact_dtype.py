"""An artifact is saved in its source checkpoint's precision unless the job asks for another
(``output.dtype``), whatever the worker computed in; the metrics give the weight bytes before
and after (issue 15, case 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open

from slimforge.app.settings import Settings
from slimforge.worker.runner import run_job
from tests.compression.helpers import char_tokenizer, tiny_llama
from tests.worker.test_runner import submit


def save_bf16_llama(folder: Path) -> Path:
    model: Any = tiny_llama(0, 2)
    model.to(torch.bfloat16).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def saved_dtypes(path: Path) -> set[torch.dtype]:
    with safe_open(str(path), framework="pt") as f:
        return {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 - not a dict


def run(api: TestClient, h: dict[str, str], settings: Settings, model: Path, files, **over: Any):
    job_id = submit(api, h, model, files, **over)
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    assert run_job(settings=settings, session_factory=factory, job_id=job_id) == "succeeded"
    return job_id, api.get(f"/v1/jobs/{job_id}", headers=h).json()["metrics"]


def test_a_bf16_model_compressed_on_a_float32_worker_stays_bf16_and_shrinks(
    api: TestClient, auth, settings: Settings, tmp_path: Path, text_files
) -> None:
    h = auth()
    model = save_bf16_llama(tmp_path / "bf16")
    source = model / "model.safetensors"
    assert saved_dtypes(source) == {torch.bfloat16}
    job_id, m = run(api, h, settings, model, text_files)  # svd, ratio 0.8, computed in float32
    artifact = settings.artifacts_root / job_id / "model.safetensors"
    assert saved_dtypes(artifact) == {torch.bfloat16}
    assert m["dtype"] == "bfloat16" and m["params_after"] < m["params_before"]
    assert artifact.stat().st_size < source.stat().st_size  # shrinks with the parameters
    assert m["model_bytes_before"] == source.stat().st_size
    assert m["model_bytes_after"] == artifact.stat().st_size
    config = api.get(f"/v1/jobs/{job_id}/artifacts/config.json", headers=h).json()
    assert config["dtype"] == "bfloat16"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_output_dtype_overrides_the_source_precision_without_a_hub_repo(
    api: TestClient, auth, settings: Settings, tmp_path: Path, text_files, dtype: str
) -> None:
    h = auth()
    model = save_bf16_llama(tmp_path / "bf16")
    # No Hub repository and no Hub token: output.dtype alone is a complete output.
    job_id, m = run(api, h, settings, model, text_files, output={"dtype": dtype})
    artifact = settings.artifacts_root / job_id / "model.safetensors"
    assert saved_dtypes(artifact) == {getattr(torch, dtype)} and m["dtype"] == dtype
    assert "hub" not in m
    per_param = m["model_bytes_after"] / m["params_after"]
    assert per_param >= getattr(torch, dtype).itemsize  # the file holds every parameter


def test_output_dtype_must_be_a_floating_precision(
    api: TestClient, auth, tmp_path: Path, text_files
) -> None:
    h = auth()
    body = {
        "model": {"path": str(save_bf16_llama(tmp_path / "bf16"))},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(text_files["calibration"])},
        "output": {"dtype": "int8"},
    }
    r = api.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 422 and "output" in r.text and "dtype" in r.text
