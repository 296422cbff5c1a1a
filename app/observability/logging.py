"""JSON log lines, one object per line, with the current request's id.

``configure_logging(settings)`` is called once by the API's entry points (``slimforge serve``
and ``slimforge.app.asgi``); tests attach their own handlers. Nothing here reads headers or bodies:
request lines carry only the fields the middleware passes in ``extra``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from slimforge.app.settings import Settings

__all__ = [
    "REQUEST_FIELDS",
    "JsonFormatter",
    "configure_logging",
    "current_request_id",
    "new_request_id",
    "request_id_var",
]

# The id of the request being handled (set by the middleware); log lines and error bodies use it.
request_id_var: ContextVar[str | None] = ContextVar("slimforge_request_id", default=None)

# Fields the request middleware puts on its records; copied into the JSON object when present.
REQUEST_FIELDS = ("method", "route", "status", "duration_ms", "tenant")

# An incoming X-Request-ID is kept only if it is a short token of safe characters.
_SANE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")


def current_request_id() -> str | None:
    return request_id_var.get()


def new_request_id(incoming: str | None) -> str:
    """The caller's id when it is a sane token, else a fresh random one."""
    if incoming is not None and _SANE_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id", ...}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for field in REQUEST_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Send every log record of the process to stderr as JSON lines at ``settings.log_level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # uvicorn's own access log would duplicate the request lines (and log raw paths).
    logging.getLogger("uvicorn.access").disabled = True
