"""``output.formats`` and ``output.gguf_type`` at submit: validation, the defaults stored in the
job's request (with their events), and the 422s for GGUF outputs llama.cpp could not load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.tiny import save_tiny_llama
from slimforge.compression.gguf_export import CONVERTER_ENV, GGUF_TYPES, export_gguf
from slimforge.compression.gguf_export import _converter_architectures as converter_architectures
from slimforge.compression.methods import method_specs
from tests.builders import job_body
from tests.compression.gguf_helpers import save_gguf_ready_llama

# Sizes the tiny models can be pruned to within 1 % of the target.
MINITRON = {"name": "minitron", "hidden_multiple": 16, "mlp_multiple": 1}


@pytest.fixture(scope="module")
def gguf_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Q8_0 GGUF of a tiny Llama, written by llama.cpp's converter."""
    folder = save_gguf_ready_llama(tmp_path_factory.mktemp("gguf-src") / "tiny")
    return export_gguf(folder, folder.parent / "tiny.Q8_0.gguf", gguf_type="q8_0")


def _post(api: TestClient, h: dict[str, str], text_files, model: Path, **over: Any):
    body = job_body(model, text_files["calibration"], text_files["evaluation"], **over)
    if model.suffix == ".gguf":
        body["model"] = {"path": str(model.parent), "gguf_file": model.name}
    return api.post("/v1/jobs", json=body, headers=h)


def _accepted(r: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    assert r.status_code == 202, r.text
    return r.json()["request"]["output"], r.json()


def _events(api: TestClient, h: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(f"/v1/jobs/{job_id}/events", headers=h).json()["items"]
    return items


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ({"gguf_type": "q9_k"}, ["output.gguf_type", "'q9_k'", *GGUF_TYPES]),
        ({"gguf_type": ["f16", "F16"]}, ["output.gguf_type", "twice"]),
        ({"formats": ["safetensors", "onnx"]}, ["output.formats", "'onnx'", "safetensors, gguf"]),
        ({"formats": ["gguf"]}, ["output.formats", "'safetensors' is always"]),
        ({"formats": ["safetensors"], "gguf_type": "f16"}, ["output.gguf_type", "no 'gguf'"]),
        ({"formats": []}, ["output.formats"]),
    ],
)
def test_malformed_outputs_are_refused_naming_the_field_value_and_choices(
    api: TestClient, auth, text_files, tiny_model: Path, output: dict[str, Any], words: list[str]
) -> None:
    r = _post(api, auth(), text_files, tiny_model, method=MINITRON, output=output)
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert all(word in message for word in words), message


@pytest.mark.parametrize(
    ("output", "formats", "types"),
    [
        (None, ["safetensors"], None),  # not a GGUF input: no GGUF unless asked
        ({"gguf_type": "Q4_K_M"}, ["safetensors", "gguf"], ["q4_k_m"]),  # implies the format
        ({"formats": ["safetensors", "gguf"]}, ["safetensors", "gguf"], ["f16"]),
        ({"gguf_type": ["f16", "q4_k_m"]}, ["safetensors", "gguf"], ["f16", "q4_k_m"]),
    ],
)
def test_defaults_of_a_folder_input(
    api: TestClient, auth, text_files, tiny_model: Path, output, formats, types
) -> None:
    over = {"output": output} if output is not None else {}
    stored, _ = _accepted(_post(api, auth(), text_files, tiny_model, method=MINITRON, **over))
    assert stored["formats"] == formats and stored["gguf_type"] == types


def test_a_gguf_input_gets_its_own_type_back_unless_the_result_is_low_rank(
    api: TestClient, auth, text_files, gguf_source: Path, tmp_path: Path
) -> None:
    h = auth()
    model = Path(shutil.copy(gguf_source, tmp_path / gguf_source.name))
    stored, job = _accepted(_post(api, h, text_files, model, method=MINITRON))
    assert stored["formats"] == ["safetensors", "gguf"] and stored["gguf_type"] == ["q8_0"]
    assert job["metrics"] == {"gguf_by_default": True}  # not asked for: a worker may drop it
    said = [e for e in _events(api, h, job["id"]) if e["message"].startswith("output:")]
    assert "the GGUF input's own type" in said[0]["message"]
    assert said[0]["data"] == {"formats": ["safetensors", "gguf"], "gguf_type": ["q8_0"]}

    # svd: low-rank layers, so safetensors only, said in a warning instead of refused.
    stored, job = _accepted(_post(api, h, text_files, model, method={"name": "svd"}))
    assert stored["formats"] == ["safetensors"] and stored["gguf_type"] is None
    (warning,) = [e for e in _events(api, h, job["id"]) if e["level"] == "warning"]
    assert "output.formats" in warning["message"] and "low-rank" in warning["message"]

    # Safetensors only when asked, and another type when asked.
    stored, _ = _accepted(
        _post(api, h, text_files, model, method=MINITRON, output={"formats": ["safetensors"]})
    )
    assert stored["formats"] == ["safetensors"] and stored["gguf_type"] is None
    stored, job = _accepted(
        _post(api, h, text_files, model, output={"gguf_type": "q4_0"}, method=MINITRON)
    )
    assert stored["gguf_type"] == ["q4_0"] and job["metrics"] == {}  # asked for


ASKED_BY = {  # the output section that asks for GGUF -> the field a refusal must name
    "formats": ({"formats": ["safetensors", "gguf"]}, "output.formats"),
    "gguf_type": ({"gguf_type": "q8_0"}, "output.gguf_type"),
}


@pytest.mark.parametrize("asked_by", ASKED_BY)
@pytest.mark.parametrize("spec", method_specs(), ids=lambda spec: spec.name)
def test_gguf_is_refused_for_a_method_whose_result_is_not_a_standard_architecture(
    api: TestClient, auth, text_files, tiny_model: Path, spec: Any, asked_by: str
) -> None:
    # auto on the tiny model: minitron's default widths miss it, so only low-rank candidates
    method = {"minitron": MINITRON, "auto": {"name": "auto", "architecture": "any"}}.get(
        spec.name, {"name": spec.name}
    )
    config = spec.config_class.model_validate(method)
    output, field = ASKED_BY[asked_by]
    r = _post(api, auth(), text_files, tiny_model, method=method, output=output)
    if config.standard_architecture():
        assert r.status_code == 202, r.text
        return
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["details"]["field"] == field and error["message"].startswith(field)
    assert "low-rank" in error["message"] and "llama.cpp does not know" in error["message"]
    assert "minitron" in error["message"] and "['safetensors']" in error["message"]


def test_gguf_is_refused_for_an_architecture_the_converter_does_not_know(
    api: TestClient, auth, text_files, tmp_path: Path
) -> None:
    folder = save_tiny_llama(tmp_path / "odd")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["NoSuchForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    output = {"gguf_type": "f16"}
    r = _post(api, auth(), text_files, folder, method=MINITRON, output=output)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "output.gguf_type"
    assert "does not know the architecture NoSuchForCausalLM" in r.json()["error"]["message"]


def test_an_api_without_the_converter_leaves_the_architecture_to_the_worker(
    api: TestClient,
    auth,
    text_files,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CONVERTER_ENV, str(tmp_path / "none"))
    converter_architectures.cache_clear()  # as on a fresh API host
    try:
        r = _post(api, auth(), text_files, tiny_model, method=MINITRON, output={"gguf_type": "f16"})
    finally:
        converter_architectures.cache_clear()
    stored, _ = _accepted(r)
    assert stored["formats"] == ["safetensors", "gguf"] and stored["gguf_type"] == ["f16"]
