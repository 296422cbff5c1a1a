"""HTTP responses for artifact files: Range requests, HEAD, ETag, from any store."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from slimforge.app.artifacts.storage import ArtifactStore
from slimforge.app.errors import AppError

__all__ = ["artifact_file_response"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(AppError):
    status_code = 416
    code = "range_not_satisfiable"


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single ``Range: bytes=…`` header; None: whole file."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return None  # multiple or malformed ranges: serve the whole file, as RFC 9110 allows
    if not m.group(1):  # the last N bytes
        start, end = max(0, size - int(m.group(2))), size - 1
    else:
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(
            f"range {header!r} is outside the file ({size} bytes)",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


def artifact_file_response(
    request: Request,
    store: ArtifactStore,
    location: str,
    entry: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Response:
    """One artifact file (``entry`` from the manifest), with its sha256 as ETag and
    ``X-Checksum-Sha256``. Local files go out as FileResponse; stored objects are streamed
    with the same Range and HEAD behaviour."""
    extra = {"ETag": f'"{entry["sha256"]}"', "X-Checksum-Sha256": entry["sha256"]}
    extra.update(headers or {})
    path = entry["path"]
    local = store.local_path(location, path)
    if local is not None:
        return FileResponse(local, filename=local.name, headers=extra)
    size = int(entry["size"])
    name = path.rsplit("/", 1)[-1]
    extra.update(
        {"Accept-Ranges": "bytes", "Content-Disposition": f'attachment; filename="{name}"'}
    )
    span = _byte_range(request.headers.get("range"), size)
    start, end, status = (0, size - 1, 200) if span is None else (*span, 206)
    if status == 206:
        extra["Content-Range"] = f"bytes {start}-{end}/{size}"
    extra["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=extra)
    body = store.read(location, path, start, end) if size else iter([b""])
    return StreamingResponse(
        body, status_code=status, headers=extra, media_type="application/octet-stream"
    )
