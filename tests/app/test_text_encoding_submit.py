"""A job whose calibration or evaluation file is not UTF-8 is refused at submit (422) with the
field, the file, the byte offset and the fix; UTF-8 text with accents is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.builders import job_body

LATIN1 = "café crème\n\nune deuxième\n".encode("latin-1")


@pytest.mark.parametrize(
    ("field", "name", "data", "offset"),
    [
        ("calibration", "calib-latin1.txt", LATIN1, 3),
        ("evaluation", "eval-latin1.txt", LATIN1, 3),
        ("calibration", "calib-latin1.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', 28),
    ],
)
def test_text_that_is_not_utf8_is_refused_at_submit(
    api: TestClient, auth, tiny_model: Path, text_files, tmp_path: Path, field, name, data, offset
) -> None:
    bad = tmp_path / name
    bad.write_bytes(data)
    files = {**text_files, field: bad}
    r = api.post(
        "/v1/jobs",
        json=job_body(tiny_model, files["calibration"], files["evaluation"]),
        headers=auth(),
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["details"] == {"field": f"{field}.path", "file": str(bad), "byte_offset": offset}
    message = error["message"]
    assert message.startswith(f"{field}.path: {bad} is not UTF-8 text")
    assert f"byte 0xe9 at byte offset {offset}" in message
    assert "iconv -f latin1 -t utf-8" in message


def test_utf8_text_with_accents_is_accepted(
    api: TestClient, auth, tiny_model: Path, text_files, tmp_path: Path
) -> None:
    calib = tmp_path / "calib-utf8.txt"
    calib.write_text("café crème\n\n" + text_files["calibration"].read_text(), encoding="utf-8")
    r = api.post(
        "/v1/jobs", json=job_body(tiny_model, calib, text_files["evaluation"]), headers=auth()
    )
    assert r.status_code == 202, r.text
