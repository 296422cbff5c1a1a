"""A text path must name a file and a task folder a folder: refused at submit (422 naming the
field), not accepted and failed by the worker with "text file not found"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.builders import SMOLLM2_HUB, job_body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("calibration", "folder"),
        ("calibration", ""),  # the first allowed root: a folder
        ("evaluation", "folder"),
    ],
)
def test_a_text_path_that_is_a_folder_is_refused(
    api: TestClient, auth, text_files, tmp_path: Path, field: str, value: str
) -> None:
    (tmp_path / "folder").mkdir()
    body = job_body(SMOLLM2_HUB, text_files["calibration"], text_files["evaluation"])
    body[field]["path"] = value
    r = api.post("/v1/jobs", json=body, headers=auth())
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["details"]["field"] == f"{field}.path"
    assert "is a folder on the server" in error["message"] and "not a file" in error["message"]


def test_a_task_folder_that_is_a_file_is_refused(
    api: TestClient, auth, text_files, tmp_path: Path
) -> None:
    task_file = tmp_path / "task.yaml"
    task_file.write_text("task: t\n")
    evaluation: dict[str, Any] = {"tasks": ["t"], "task_folders": [str(task_file)]}
    body = job_body(SMOLLM2_HUB, text_files["calibration"], evaluation=evaluation)
    r = api.post("/v1/jobs", json=body, headers=auth())
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["details"]["field"] == "evaluation.task_folders"
    assert "not a folder" in error["message"]
    evaluation["task_folders"] = [str(tmp_path)]
    assert api.post("/v1/jobs", json=body, headers=auth()).status_code == 202
