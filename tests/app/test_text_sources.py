"""Submit refuses evaluation text that is the calibration text (issue 16, item 2)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient


def body(calibration: dict[str, Any], evaluation: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": calibration,
    }
    if evaluation is not None:
        spec["evaluation"] = evaluation
    return spec


def post(api: TestClient, auth, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    r = api.post("/v1/jobs", json=spec, headers=auth())
    return r.status_code, r.json()


def test_distinct_files_are_accepted(api: TestClient, auth, text_files) -> None:
    status, job = post(
        api,
        auth,
        body({"path": str(text_files["calibration"])}, {"path": str(text_files["evaluation"])}),
    )
    assert status == 202, job
    status, job = post(api, auth, body({"synthetic": True}, {"path": "calib.txt"}))
    assert status == 202, job  # sampled calibration text is not the file
    status, job = post(api, auth, body({"path": "calib.txt"}, None))
    assert status == 202, job


def _link(kind: str, target: Path, tmp_path: Path) -> str:
    """Another name for ``target``'s text, as the request gives it."""
    if kind == "same path":
        return str(target)
    if kind == "relative path":
        return target.name  # relative to the first allowed root (tmp_path)
    if kind == "dotted path":
        (tmp_path / "sub").mkdir()
        return str(tmp_path / "sub" / ".." / target.name)
    new = tmp_path / "other.txt"
    if kind == "symlink":
        new.symlink_to(target)
    elif kind == "hard link":
        os.link(target, new)
    elif kind == "copy":
        shutil.copyfile(target, new)
    return str(new)


@pytest.mark.parametrize(
    "kind", ["same path", "relative path", "dotted path", "symlink", "hard link", "copy"]
)
def test_the_same_file_under_any_name_is_refused(
    api: TestClient, auth, text_files, tmp_path: Path, kind: str
) -> None:
    calibration = text_files["calibration"]
    spec = body({"path": str(calibration)}, {"path": _link(kind, calibration, tmp_path)})
    status, answer = post(api, auth, spec)
    assert status == 422, answer
    error = answer["error"]
    assert error["details"]["field"] == "evaluation"
    assert "not held-out" in error["message"] and "give evaluation a file" in error["message"]
    assert str(tmp_path) not in error["message"]  # names files, not the server's folders


def test_a_copy_with_one_byte_changed_is_not_the_same_file(
    api: TestClient, auth, text_files, tmp_path: Path
) -> None:
    calibration = text_files["calibration"]
    text = calibration.read_bytes()
    (tmp_path / "edited.txt").write_bytes(text[:-1] + (b"x" if text[-1:] != b"x" else b"y"))
    status, job = post(api, auth, body({"path": str(calibration)}, {"path": "edited.txt"}))
    assert status == 202, job


SAME_SPLIT = [
    ({"dataset": "org/texts"}, {"dataset": "org/texts"}),  # both default to 'train'
    ({"dataset": "org/texts", "split": "test"}, {"dataset": "Org/Texts", "split": "test"}),
    ({"dataset": "org/texts", "config_name": "default"}, {"dataset": "org/texts"}),
    ({"dataset": "org/texts", "revision": "main"}, {"dataset": "org/texts"}),
    ({"dataset": "org/texts", "split": "train"}, {"dataset": "org/texts", "split": "train[:10%]"}),
    (
        {"dataset": "org/texts", "split": "train[:90%]"},
        {"dataset": "org/texts", "split": "train[ :90%]"},
    ),
]
OTHER_SPLIT = [
    ({"dataset": "org/texts"}, {"dataset": "org/texts", "split": "test"}),
    ({"dataset": "org/texts"}, {"dataset": "org/other"}),
    ({"dataset": "org/texts", "config_name": "en"}, {"dataset": "org/texts", "config_name": "de"}),
    ({"dataset": "org/texts", "revision": "v1"}, {"dataset": "org/texts", "revision": "v2"}),
    (
        {"dataset": "org/texts", "split": "train[:90%]"},
        {"dataset": "org/texts", "split": "train[90%:]"},
    ),
]


@pytest.mark.parametrize(("calibration", "evaluation"), SAME_SPLIT)
def test_the_same_dataset_split_is_refused(api: TestClient, auth, calibration, evaluation) -> None:
    status, answer = post(api, auth, body(calibration, evaluation))
    assert status == 422, answer
    error = answer["error"]
    assert error["details"]["field"] == "evaluation"
    assert "is the calibration split" in error["message"]
    assert "give evaluation another split" in error["message"]


@pytest.mark.parametrize(("calibration", "evaluation"), OTHER_SPLIT)
def test_other_splits_configs_revisions_and_slices_are_accepted(
    api: TestClient, auth, calibration, evaluation
) -> None:
    status, job = post(api, auth, body(calibration, evaluation))
    assert status == 202, job


def test_a_file_and_a_dataset_are_left_to_the_worker(api: TestClient, auth, text_files) -> None:
    status, job = post(
        api, auth, body({"path": str(text_files["calibration"])}, {"dataset": "org/texts"})
    )
    assert status == 202, job
