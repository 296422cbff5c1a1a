"""Submit-time checks of a job's text files: each local calibration or evaluation file must be
UTF-8 (.txt, .md and .jsonl alike), or the job is refused with a 422 that names the field, the
file, the byte offset and the fix, before a worker spends minutes loading the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimforge.app.errors import UnprocessableInput
from slimforge.compression.text_encoding import NotUtf8Error, check_utf8

__all__ = ["check_text_encodings"]

TEXT_FIELDS = ("calibration", "evaluation")


def check_text_encodings(spec: dict[str, Any]) -> None:
    """Check the local text files of a resolved job ``spec`` (paths already made absolute and
    inside the allowed roots). Raises ``UnprocessableInput`` (422) for the first file that is
    not UTF-8; Hub datasets and synthetic text are not files and pass."""
    for name in TEXT_FIELDS:
        path = (spec.get(name) or {}).get("path")
        if path is None:
            continue
        try:
            check_utf8(Path(path), label=f"{name}.path")
        except NotUtf8Error as exc:
            raise UnprocessableInput(
                str(exc),
                details={"field": f"{name}.path", "file": path, "byte_offset": exc.offset},
            ) from None
        except IsADirectoryError:
            continue  # not a text file at all: the worker's loader says so
