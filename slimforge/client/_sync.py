"""The synchronous client: :class:`Client` and its ``jobs`` resource."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from slimforge.client._common import (
    Deadline,
    FileSink,
    Settings,
    SSEParser,
    error_from_response,
    event_from_sse,
    idempotency_headers,
    is_terminal,
    job_payload,
    outcome,
    retryable_exception,
    retryable_status,
    select_files,
    target_path,
)
from slimforge.client._errors import ConnectionFailed, WaitTimeout
from slimforge.contract.artifacts import ArtifactOut
from slimforge.contract.jobs import EventOut, EventPage, JobCreate, JobOut, JobPage, JobStatus
from slimforge.contract.methods import MethodOut

__all__ = ["Client", "Jobs"]

ProgressCallback = Callable[[str, int, int], None]


class Client:
    """A synchronous client of the slimforge API.

    ``base_url`` and ``api_key`` default to ``SLIMFORGE_URL`` / ``SLIMFORGE_API_KEY``, then the
    config file written by ``slimforge config``. Pass ``http_client`` (any ``httpx.Client``,
    e.g. FastAPI's ``TestClient``) to choose the transport; its own base URL and timeout are
    used then. Requests that are safe to repeat are retried ``max_retries`` times on 429, 502,
    503, 504 and connection errors, with exponential backoff and jitter, honouring
    ``Retry-After``; ``sleep`` and ``clock`` are injectable for tests.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = 30.0,
        max_retries: int = 3,
        http_client: httpx.Client | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = Settings.build(
            base_url,
            api_key,
            http_client.base_url if http_client is not None else None,
            max_retries,
            backoff_base,
            backoff_cap,
        )
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=timeout)
        self._sleep = sleep
        self._clock = clock
        self.jobs = Jobs(self)

    @property
    def base_url(self) -> str:
        """The server's URL, e.g. ``http://127.0.0.1:8000``."""
        return self._settings.base_url

    def methods(self) -> builtins.list[MethodOut]:
        """Every compression method with its description and parameter JSON schema."""
        data = self.request("GET", "/v1/methods").json()
        return [MethodOut.model_validate(m) for m in data]

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One API call with authentication, retries and error mapping; ``path`` starts at
        ``/v1``. Raises :class:`APIError` for 4xx/5xx, :class:`ConnectionFailed` if the server
        cannot be reached."""
        return self._send(method, path, params=params, json=json, headers=headers)

    @contextmanager
    def _stream(
        self, path: str, *, params: Mapping[str, Any] | None = None, headers: Any = None
    ) -> Iterator[httpx.Response]:
        response = self._send("GET", path, params=params, headers=headers, stream=True)
        try:
            yield response
        finally:
            response.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        s = self._settings
        all_headers = s.headers(headers)
        attempt = 0
        while True:
            request = self._http.build_request(
                method, s.url(path), params=params, json=json, headers=all_headers
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                ok = retryable_exception(exc, method, all_headers)
                delay = s.delay(attempt, None) if ok else None
                if delay is None:
                    raise ConnectionFailed(s.base_url, exc) from exc
            else:
                if response.status_code < 400:
                    return response
                ok = retryable_status(response.status_code, method, all_headers)
                delay = s.delay(attempt, response) if ok else None
                if delay is None:
                    response.read()
                    raise error_from_response(response)
                response.close()
            self._sleep(delay)
            attempt += 1

    def close(self) -> None:
        """Close the HTTP connections (not those of an injected ``http_client``)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Jobs:
    """``client.jobs``: submit, inspect, follow, cancel and download compression jobs."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self, body: JobCreate | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> JobOut:
        """Submit a job (``POST /v1/jobs``). A mapping is sent as is and validated by the
        server. Without ``idempotency_key`` one is generated, so a retried request cannot
        create the job twice; the same key with the same body returns the same job."""
        response = self._client.request(
            "POST", "/v1/jobs", json=job_payload(body), headers=idempotency_headers(idempotency_key)
        )
        return JobOut.model_validate(response.json())

    def get(self, job_id: str) -> JobOut:
        """The job's status, stage, metrics, error and normalised request."""
        return JobOut.model_validate(self._client.request("GET", f"/v1/jobs/{job_id}").json())

    def page(
        self, status: JobStatus | None = None, *, limit: int = 50, after: str | None = None
    ) -> JobPage:
        """One page of the tenant's jobs, newest first; pass ``next_cursor`` as ``after``."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if after is not None:
            params["after"] = after
        return JobPage.model_validate(self._client.request("GET", "/v1/jobs", params=params).json())

    def list(
        self, status: JobStatus | None = None, *, limit: int = 50, max_items: int | None = None
    ) -> Iterator[JobOut]:
        """Iterate over the tenant's jobs, newest first, fetching ``limit`` per request and
        following ``next_cursor``; stops after ``max_items`` if given."""
        after: str | None = None
        seen = 0
        while True:
            page = self.page(status, limit=limit, after=after)
            for job in page.items:
                if max_items is not None and seen >= max_items:
                    return
                seen += 1
                yield job
            if page.next_cursor is None or not page.items:
                return
            after = page.next_cursor

    def cancel(self, job_id: str) -> JobOut:
        """Cancel a job: at once if queued, at the next block if running."""
        response = self._client.request("POST", f"/v1/jobs/{job_id}/cancel")
        return JobOut.model_validate(response.json())

    def events_page(self, job_id: str, *, after: int | None = None, limit: int = 100) -> EventPage:
        """One page of the job's events after event id ``after``, with the job's status."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        response = self._client.request("GET", f"/v1/jobs/{job_id}/events", params=params)
        return EventPage.model_validate(response.json())

    def events(
        self, job_id: str, *, after: int | None = None, stream: bool = False
    ) -> Iterator[EventOut]:
        """The job's events after ``after``. ``stream=False``: those recorded so far (every
        page). ``stream=True``: follow the server-sent events until the job ends, resuming
        with ``Last-Event-ID`` if the connection drops."""
        if stream:
            yield from self._follow(job_id, after)
            return
        while True:
            page = self.events_page(job_id, after=after, limit=1000)
            yield from page.items
            if page.next_cursor is None:
                return
            after = page.next_cursor

    def _follow(self, job_id: str, after: int | None) -> Iterator[EventOut]:
        settings = self._client._settings
        drops = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            params: dict[str, Any] = {"stream": "true"}
            if after is not None:
                headers["Last-Event-ID"] = str(after)
                params["after"] = after
            error: BaseException = RuntimeError("the event stream ended before the job did")
            try:
                with self._client._stream(
                    f"/v1/jobs/{job_id}/events", params=params, headers=headers
                ) as response:
                    parser = SSEParser()
                    for line in response.iter_lines():
                        item = parser.feed(line)
                        if item is None:
                            continue
                        name, data, _ = item
                        if name == "job.end":
                            return
                        if name == "job.event":
                            event = event_from_sse(data)
                            after, drops = event.id, 0
                            yield event
            except httpx.TransportError as exc:
                error = exc
            delay = settings.delay(drops, None)
            if delay is None:
                raise ConnectionFailed(settings.base_url, error)
            self._client._sleep(delay)
            drops += 1

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_event: Callable[[EventOut], object] | None = None,
    ) -> JobOut:
        """Follow the job's events (polling) until it ends, calling ``on_event`` for each one
        (from the first). Returns the succeeded job; raises :class:`JobFailed` or
        :class:`JobCancelled` (with ``.job``), or :class:`WaitTimeout` (a ``TimeoutError``)."""
        deadline = Deadline(timeout, self._client._clock)
        after: int | None = None
        while True:
            page = self.events_page(job_id, after=after, limit=1000)
            for event in page.items:
                after = event.id
                if on_event is not None:
                    on_event(event)
            if page.next_cursor is not None:
                continue
            if is_terminal(page.job_status):
                return outcome(self.get(job_id))
            left = deadline.remaining()
            if left is not None and left <= 0:
                raise WaitTimeout(job_id, timeout or 0.0, page.job_status)
            self._client._sleep(poll_interval if left is None else min(poll_interval, left))

    def artifacts(self, job_id: str) -> ArtifactOut:
        """The job's artifact files with their size and sha256 (the manifest)."""
        response = self._client.request("GET", f"/v1/jobs/{job_id}/artifacts")
        return ArtifactOut.model_validate(response.json())

    def download(
        self,
        job_id: str,
        dest: str | PathLike[str],
        files: Sequence[str] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> builtins.list[Path]:
        """Download the artifact's files (all, or the manifest paths in ``files``) under
        ``dest``. Each file is written beside its target and renamed into place only once its
        size and sha256 match the manifest, else :class:`ChecksumMismatch` (nothing left
        behind). ``on_progress(path, bytes_done, size)`` is called as bytes arrive."""
        root = Path(dest)
        written: builtins.list[Path] = []
        for entry in select_files(self.artifacts(job_id), files):
            target = target_path(root, entry.path)
            url = f"/v1/jobs/{job_id}/artifacts/{quote(entry.path, safe='/')}"
            drops = 0
            while True:
                sink = FileSink(
                    target, expected_sha256=entry.sha256, expected_size=entry.size, name=entry.path
                )
                try:
                    with self._client._stream(url) as response:
                        for chunk in response.iter_bytes():
                            sink.write(chunk)
                            if on_progress is not None:
                                on_progress(entry.path, sink.written, entry.size)
                        header = response.headers.get("X-Checksum-Sha256")
                except httpx.TransportError as exc:  # dropped mid-body: start the file again
                    sink.abort()
                    delay = self._client._settings.delay(drops, None)
                    if delay is None:
                        raise ConnectionFailed(self._client.base_url, exc) from exc
                    self._client._sleep(delay)
                    drops += 1
                    continue
                except BaseException:
                    sink.abort()
                    raise
                written.append(sink.commit(header))
                break
        return written
