"""The job's parameters as the card shows them: what made the model, without the server's paths.

Cards go to the Hub (issue 15, case 13). The worker's file system is nobody's business and
useless to a reader; a file's name and its sha256 say which text or checkpoint was used and let
anyone check a copy of it.

Rules:

- only the sections that determine the model are kept (``CARD_SECTIONS``); delivery settings
  (``output``, ``webhook``) and the free-form ``metadata`` are left out;
- every absolute path (or ``~`` path) anywhere in them becomes its last component;
- a ``path`` key that names a file gets a ``sha256`` beside it; a model folder with a
  ``gguf_file`` gets the GGUF's ``gguf_sha256``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

__all__ = ["CARD_SECTIONS", "file_sha256", "public_parameters"]

CARD_SECTIONS = ("job_id", "model", "target", "method", "distill", "calibration", "evaluation")


def file_sha256(path: Path) -> str | None:
    """Hex sha256 of a file's bytes (read in chunks), or None when it is not a readable file."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _is_server_path(value: str) -> bool:
    return (
        value.startswith(("/", "~"))
        or PureWindowsPath(value).is_absolute()
        or value.startswith("file://")
    )


def _name(value: str) -> str:
    """The last component of a path (POSIX or Windows), without the folders above it."""
    value = value.removeprefix("file://").rstrip("/\\")
    return PureWindowsPath(PurePosixPath(value).name).name or value


def _public(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            out[key] = _public(item)
            if key == "path" and isinstance(item, str) and _is_server_path(item):
                digest = file_sha256(Path(item).expanduser())
                if digest is not None:
                    out["sha256"] = digest
        if isinstance(value.get("path"), str) and isinstance(value.get("gguf_file"), str):
            digest = file_sha256(Path(value["path"]).expanduser() / value["gguf_file"])
            if digest is not None:
                out["gguf_sha256"] = digest
        return out
    if isinstance(value, list | tuple):
        return [_public(item) for item in value]
    if isinstance(value, str) and _is_server_path(value):
        return _name(value)
    return value


def public_parameters(job_parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``job_parameters`` (the stored request, ``job_id`` added) with the sections of
    ``CARD_SECTIONS`` only, server paths replaced by names, and sha256 digests of the files
    (hex strings) added as the module doc says. Reads the files to hash them."""
    kept = {k: job_parameters[k] for k in CARD_SECTIONS if job_parameters.get(k) is not None}
    return dict(_public(kept))
