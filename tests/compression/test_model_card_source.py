"""The card names its source from the source's own metadata and shows no server paths
(issue 15, case 13)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from huggingface_hub import ModelCard, ModelCardData

from slimforge.compression.model_card import (
    SourceInfo,
    describe_source,
    public_parameters,
    render_model_card,
)


def write_gguf(path: Path, fields: dict[str, str]) -> Path:
    """A GGUF file with one small tensor and the given string metadata."""
    writer = GGUFWriter(str(path), "llama")
    for key, value in fields.items():
        writer.add_string(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


FILE = "Tiny-1M-Instruct.Q4_K_M.gguf"
PARENT = {"general.base_model.0.repo_url": "https://huggingface.co/org/parent"}
GGUF_CASES = [
    (  # the GGUF's own repository, named by its URL
        {"general.name": "Tiny Model", "general.repo_url": "https://huggingface.co/org/tiny-GGUF"}
        | {"general.organization": "Org"},
        SourceInfo("Tiny Model", "org/tiny-GGUF", None, "Org", FILE),
    ),
    (  # older llama.cpp: the repository it was converted from; the parent is not the source
        {"general.source.huggingface.repository": "org/legacy", **PARENT},
        SourceInfo("legacy", "org/legacy", None, file=FILE),
    ),
    (
        {
            "general.source.url": "https://huggingface.co/org/src/tree/main",
            "general.license": "mit",
        },
        SourceInfo("src", "org/src", "mit", file=FILE),
    ),
    (  # neither a Hub URL nor a source: name from basename and size label, no base_model
        {"general.source.url": "https://arxiv.org/abs/1", "general.basename": "tiny", **PARENT}
        | {"general.size_label": "1M"},
        SourceInfo("tiny 1M", None, None, file=FILE),
    ),
    ({}, SourceInfo("Tiny-1M-Instruct", None, None, file=FILE)),  # the file name, encoding dropped
]


@pytest.mark.parametrize(("fields", "expected"), GGUF_CASES)
def test_a_gguf_is_named_from_its_metadata(
    tmp_path: Path, fields: dict[str, str], expected: SourceInfo
) -> None:
    gguf = write_gguf(tmp_path / FILE, fields)
    spec = {"path": str(tmp_path), "gguf_file": gguf.name}
    assert describe_source(spec) == expected
    assert describe_source(gguf) == expected  # the file itself
    assert describe_source(tmp_path, gguf_file=gguf.name) == expected  # folder and file name


def test_a_folder_is_named_from_its_config_or_the_hub_cache(tmp_path: Path) -> None:
    folder = tmp_path / "my-checkpoint"
    folder.mkdir()
    config = folder / "config.json"
    config.write_text(json.dumps({"_name_or_path": "org/base-model", "model_type": "llama"}))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Base\n")
    assert describe_source({"path": str(folder)}) == SourceInfo(
        "base-model", "org/base-model", "apache-2.0"
    )
    # A local path in _name_or_path is not a Hub id, and the server's folders stay private.
    config.write_text(json.dumps({"_name_or_path": "/srv/train/run-7/checkpoint-100"}))
    assert describe_source(folder) == SourceInfo("my-checkpoint", None, "apache-2.0")
    # A snapshot of the Hugging Face cache names the repository it came from.
    snapshot = tmp_path / "hub" / "models--Org--Cached-Model" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"_name_or_path": "org/other"}))
    assert describe_source({"path": str(snapshot)}).base_model == "Org/Cached-Model"


def test_a_hub_model_is_its_id() -> None:
    source = describe_source({"id": "org/some-model-not-in-any-cache", "revision": "main"})
    assert (source.name, source.base_model) == (
        "some-model-not-in-any-cache",
        "org/some-model-not-in-any-cache",
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_card_shows_names_and_digests_not_server_paths(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    gguf = write_gguf(
        tmp_path / "models" / "Tiny-1M-Instruct.Q4_1.gguf",
        {
            "general.name": "Tiny 1M Instruct",
            "general.license": "mit",
            "general.organization": "Org",
        }
        | {"general.source.huggingface.repository": "org/tiny-1m-instruct"},
    )
    calibration, evaluation = tmp_path / "calib.txt", tmp_path / "eval.txt"
    calibration.write_text("calibration text\n")
    evaluation.write_text("evaluation text\n")
    spec: dict[str, Any] = {
        "job_id": "job-1",
        "model": {"path": str(gguf.parent), "gguf_file": gguf.name, "revision": "main"},
        "target": {"ratio": 0.8},
        "method": {"name": "minitron"},
        "calibration": {"path": str(calibration), "max_tokens": 4096},
        "evaluation": {"path": str(evaluation), "tasks": ["hellaswag", str(tmp_path / "task")]},
        "output": {"hub_repo": "acme/tiny"},
        "webhook": {"url": "https://hooks.example.com/secret-token"},
        "metadata": {"customer": "private"},
    }
    text = render_model_card(
        method="minitron",
        target="ratio 0.8",
        params_before=100,
        params_after=80,
        metrics={"teacher_perplexity": 4.0, "student_perplexity": 5.0},
        ranks=None,
        job_parameters=spec,
    )
    assert str(tmp_path) not in text and os.sep + "models" not in text
    assert "secret-token" not in text and "private" not in text and "hub_repo" not in text
    data = ModelCard(text).data
    assert isinstance(data, ModelCardData)
    assert (data.base_model, data.license) == ("org/tiny-1m-instruct", "mit")
    assert data.model_name == "Tiny-1M-Instruct-slimforge"
    assert ".gguf-slimforge" not in text
    assert "# Tiny 1M Instruct compressed with slimforge" in text
    assert "by Org; GGUF file `Tiny-1M-Instruct.Q4_1.gguf`" in text
    params = json.loads(text.split("```json\n")[1].split("\n```")[0])
    assert params == public_parameters(spec)
    assert params["model"] == {
        "path": "models",
        "gguf_file": gguf.name,
        "gguf_sha256": sha256(gguf),
        "revision": "main",
    }
    assert params["calibration"] == {
        "path": "calib.txt",
        "sha256": sha256(calibration),
        "max_tokens": 4096,
    }
    assert params["evaluation"]["sha256"] == sha256(evaluation)
    assert params["evaluation"]["tasks"] == ["hellaswag", "task"]
    assert set(params) == {"job_id", "model", "target", "method", "calibration", "evaluation"}


@pytest.mark.slow
def test_smollm2_gguf_is_named_from_its_metadata() -> None:
    from tests.compression.test_smollm2_slow import GGUF, smollm2_dir

    path = smollm2_dir() / GGUF
    fields = GGUFReader(path).fields  # the reference: the file's own fields, read directly
    name, license = (fields[k].contents() for k in ("general.name", "general.license"))
    source = describe_source({"path": str(path.parent), "gguf_file": GGUF})
    assert (source.name, source.license) == (name, license)
    assert GGUF not in source.name and "gguf" not in source.name.lower()
