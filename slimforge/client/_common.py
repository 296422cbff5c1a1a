"""What the sync and async clients share: configuration, retry rules, error parsing, server-sent
event parsing and checked, atomic file writes. No I/O on the network here."""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from slimforge.client._config import resolve_config
from slimforge.client._errors import (
    APIError,
    AuthenticationError,
    ChecksumMismatch,
    JobCancelled,
    JobFailed,
    SlimforgeError,
)
from slimforge.contract.artifacts import ArtifactFileOut, ArtifactOut
from slimforge.contract.jobs import TERMINAL_STATUSES, EventOut, JobCreate, JobOut

__all__ = [
    "RETRY_STATUSES",
    "Deadline",
    "FileSink",
    "SSEParser",
    "Settings",
    "backoff_delay",
    "error_from_response",
    "event_from_sse",
    "idempotency_headers",
    "is_terminal",
    "job_payload",
    "outcome",
    "parse_retry_after",
    "retryable_exception",
    "retryable_status",
    "select_files",
    "target_path",
]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_RETRY_AFTER = 300.0  # longer waits are not retried: the error goes to the caller
USER_AGENT = "slimforge-python/0.1.0"


@dataclass
class Settings:
    """A client's resolved connection and retry settings."""

    base_url: str
    api_key: str | None
    max_retries: int
    backoff_base: float
    backoff_cap: float

    @classmethod
    def build(
        cls,
        base_url: str | None,
        api_key: str | None,
        client_base_url: httpx.URL | None,
        max_retries: int,
        backoff_base: float,
        backoff_cap: float,
    ) -> Settings:
        # An injected client that already points somewhere (TestClient: http://testserver)
        # wins over the environment and the config file, not over an explicit argument.
        injected = str(client_base_url).rstrip("/") if client_base_url else ""
        config = resolve_config(base_url or injected or None, api_key)
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        return cls(config.url, config.api_key, max_retries, backoff_base, backoff_cap)

    def url(self, path: str) -> str:
        return self.base_url + path

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``; None: do not retry."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            after = parse_retry_after(response.headers.get("Retry-After"))
            if after is not None:
                return after if after <= MAX_RETRY_AFTER else None
        return backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)


def backoff_delay(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with jitter: between half and all of ``min(cap, base * 2**attempt)``."""
    ceiling = min(cap, base * (2**attempt))
    return ceiling / 2 + rand() * ceiling / 2


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retryable_status(status: int, method: str, headers: Mapping[str, str]) -> bool:
    """429 is refused before any work, so always safe; 502/503/504 only for requests that may
    run twice (idempotent methods, or a POST with an ``Idempotency-Key``)."""
    if status not in RETRY_STATUSES:
        return False
    return status == 429 or _idempotent(method, headers)


def retryable_exception(exc: httpx.TransportError, method: str, headers: Mapping[str, str]) -> bool:
    """A connection that never opened sent nothing; other failures only for idempotent ones."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return _idempotent(method, headers)


def _idempotent(method: str, headers: Mapping[str, str]) -> bool:
    return method.upper() in IDEMPOTENT_METHODS or any(
        k.lower() == "idempotency-key" for k in headers
    )


def error_from_response(response: httpx.Response) -> APIError:
    """The API's JSON error body as an :class:`APIError` (401: :class:`AuthenticationError`)."""
    code, message, details = "http_error", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
        details = err.get("details")
    if not message:
        text = response.text.strip()
        message = text[:300] if text else response.reason_phrase or f"HTTP {response.status_code}"
    cls = AuthenticationError if response.status_code == 401 else APIError
    return cls(response.status_code, code, message, details, dict(response.headers))


def job_payload(body: JobCreate | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of ``POST /v1/jobs``: a model's fields as the caller set them (defaults
    are the server's to fill in; the method's ``name``, the union's discriminator, is always
    sent), a mapping as is (the server validates it; a 422 :class:`APIError` says what to
    fix)."""
    if isinstance(body, JobCreate):
        data = body.model_dump(mode="json", exclude_unset=True)
        data["method"] = {**data.get("method", {}), "name": body.method.name}
        return data
    if isinstance(body, Mapping):
        return dict(body)
    raise TypeError(f"a job body is a JobCreate or a mapping, not {type(body).__name__}")


def idempotency_headers(key: str | None) -> dict[str, str]:
    """Always send a key, so a retried POST cannot create a second job."""
    return {"Idempotency-Key": key or f"sdk-{uuid.uuid4()}"}


def outcome(job: JobOut) -> JobOut:
    """``job`` if it succeeded; raises :class:`JobFailed` / :class:`JobCancelled` otherwise."""
    if job.status == "failed":
        raise JobFailed(job)
    if job.status == "cancelled":
        raise JobCancelled(job)
    return job


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


class SSEParser:
    """Incremental server-sent events parser: feed lines, get ``(event, data, id)`` tuples."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> tuple[str, str, str | None] | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data and not self._event:
                return None
            out = (self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return out
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def event_from_sse(data: str) -> EventOut:
    return EventOut.model_validate_json(data)


def target_path(dest: Path, relative: str) -> Path:
    """``dest / relative`` for a manifest path, refusing anything that leaves ``dest``."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or not pure.parts or any(p in ("..", "") for p in pure.parts):
        raise SlimforgeError(f"refusing artifact path '{relative}': it leaves the destination")
    return dest.joinpath(*pure.parts)


def select_files(listing: ArtifactOut, files: Sequence[str] | None) -> list[ArtifactFileOut]:
    """The manifest entries to download: all, or those named (each must exist)."""
    if files is None:
        return list(listing.files)
    known = {f.path: f for f in listing.files}
    missing = [name for name in files if name not in known]
    if missing:
        raise SlimforgeError(
            f"job {listing.job_id} has no artifact file {', '.join(map(repr, missing))}; "
            f"its files: {', '.join(sorted(known))}"
        )
    return [known[name] for name in dict.fromkeys(files)]


class FileSink:
    """Write one file atomically: into a temporary file beside it, hashed on the way, renamed
    into place only if size and sha256 match the manifest. :meth:`abort` removes the temp."""

    def __init__(self, path: Path, *, expected_sha256: str, expected_size: int, name: str):
        self.path = path
        self.name = name
        self.expected_sha256 = expected_sha256.lower()
        self.expected_size = expected_size
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.written = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.written += len(chunk)

    def commit(self, header_sha256: str | None = None) -> Path:
        """Check and move into place; raises :class:`ChecksumMismatch` (and cleans up)."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            actual = self._hash.hexdigest()
            if actual != self.expected_sha256:
                raise ChecksumMismatch(self.name, self.expected_sha256, actual)
            if header_sha256 and header_sha256.lower() != self.expected_sha256:
                raise ChecksumMismatch(self.name, self.expected_sha256, header_sha256.lower())
            if self.written != self.expected_size:
                raise ChecksumMismatch(
                    self.name, f"{self.expected_size} bytes", f"{self.written} bytes"
                )
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class Deadline:
    """A wait's time limit on the monotonic clock (None: no limit)."""

    def __init__(self, timeout: float | None, clock: Callable[[], float] = time.monotonic):
        self.timeout = timeout
        self._clock = clock
        self._end = None if timeout is None else clock() + timeout

    def remaining(self) -> float | None:
        return None if self._end is None else self._end - self._clock()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0
