"""The asynchronous client: :class:`AsyncClient` and its ``jobs`` resource (the same API as
:class:`slimforge.client.Client`, with coroutines and async iterators)."""

from __future__ import annotations

import asyncio
import builtins
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
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

__all__ = ["AsyncClient", "AsyncJobs"]


class AsyncClient:
    """An asynchronous client of the slimforge API; see :class:`slimforge.client.Client` for
    the settings. ``http_client`` is any ``httpx.AsyncClient`` (e.g. one on
    ``httpx.ASGITransport(app=...)``); ``sleep`` is an async callable."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = 30.0,
        max_retries: int = 3,
        http_client: httpx.AsyncClient | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
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
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)
        self._sleep = sleep
        self._clock = clock
        self.jobs = AsyncJobs(self)

    @property
    def base_url(self) -> str:
        """The server's URL."""
        return self._settings.base_url

    async def methods(self) -> builtins.list[MethodOut]:
        """Every compression method with its description and parameter JSON schema."""
        data = (await self.request("GET", "/v1/methods")).json()
        return [MethodOut.model_validate(m) for m in data]

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One API call with authentication, retries and error mapping (see ``Client``)."""
        return await self._send(method, path, params=params, json=json, headers=headers)

    @asynccontextmanager
    async def _stream(
        self, path: str, *, params: Mapping[str, Any] | None = None, headers: Any = None
    ) -> AsyncIterator[httpx.Response]:
        response = await self._send("GET", path, params=params, headers=headers, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def _send(
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
                response = await self._http.send(request, stream=stream)
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
                    await response.aread()
                    raise error_from_response(response)
                await response.aclose()
            await self._sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        """Close the HTTP connections (not those of an injected ``http_client``)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncJobs:
    """``client.jobs`` of :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self, body: JobCreate | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> JobOut:
        """Submit a job; see ``Client.jobs.create``."""
        response = await self._client.request(
            "POST", "/v1/jobs", json=job_payload(body), headers=idempotency_headers(idempotency_key)
        )
        return JobOut.model_validate(response.json())

    async def get(self, job_id: str) -> JobOut:
        """The job's status, stage, metrics, error and normalised request."""
        response = await self._client.request("GET", f"/v1/jobs/{job_id}")
        return JobOut.model_validate(response.json())

    async def page(
        self, status: JobStatus | None = None, *, limit: int = 50, after: str | None = None
    ) -> JobPage:
        """One page of the tenant's jobs, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if after is not None:
            params["after"] = after
        response = await self._client.request("GET", "/v1/jobs", params=params)
        return JobPage.model_validate(response.json())

    async def list(
        self, status: JobStatus | None = None, *, limit: int = 50, max_items: int | None = None
    ) -> AsyncIterator[JobOut]:
        """Iterate over the tenant's jobs, following ``next_cursor`` (``async for``)."""
        after: str | None = None
        seen = 0
        while True:
            page = await self.page(status, limit=limit, after=after)
            for job in page.items:
                if max_items is not None and seen >= max_items:
                    return
                seen += 1
                yield job
            if page.next_cursor is None or not page.items:
                return
            after = page.next_cursor

    async def cancel(self, job_id: str) -> JobOut:
        """Cancel a job: at once if queued, at the next block if running."""
        response = await self._client.request("POST", f"/v1/jobs/{job_id}/cancel")
        return JobOut.model_validate(response.json())

    async def events_page(
        self, job_id: str, *, after: int | None = None, limit: int = 100
    ) -> EventPage:
        """One page of the job's events after event id ``after``."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        response = await self._client.request("GET", f"/v1/jobs/{job_id}/events", params=params)
        return EventPage.model_validate(response.json())

    async def events(
        self, job_id: str, *, after: int | None = None, stream: bool = False
    ) -> AsyncIterator[EventOut]:
        """The job's events; ``stream=True`` follows them until the job ends."""
        if stream:
            async for event in self._follow(job_id, after):
                yield event
            return
        while True:
            page = await self.events_page(job_id, after=after, limit=1000)
            for event in page.items:
                yield event
            if page.next_cursor is None:
                return
            after = page.next_cursor

    async def _follow(self, job_id: str, after: int | None) -> AsyncIterator[EventOut]:
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
                async with self._client._stream(
                    f"/v1/jobs/{job_id}/events", params=params, headers=headers
                ) as response:
                    parser = SSEParser()
                    async for line in response.aiter_lines():
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
            await self._client._sleep(delay)
            drops += 1

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_event: Callable[[EventOut], object] | None = None,
    ) -> JobOut:
        """Follow the job until it ends; ``on_event`` may be a plain or an async callable.
        Returns the succeeded job or raises ``JobFailed`` / ``JobCancelled`` / ``WaitTimeout``."""
        deadline = Deadline(timeout, self._client._clock)
        after: int | None = None
        while True:
            page = await self.events_page(job_id, after=after, limit=1000)
            for event in page.items:
                after = event.id
                if on_event is not None:
                    result = on_event(event)
                    if inspect.isawaitable(result):
                        await result
            if page.next_cursor is not None:
                continue
            if is_terminal(page.job_status):
                return outcome(await self.get(job_id))
            left = deadline.remaining()
            if left is not None and left <= 0:
                raise WaitTimeout(job_id, timeout or 0.0, page.job_status)
            await self._client._sleep(poll_interval if left is None else min(poll_interval, left))

    async def artifacts(self, job_id: str) -> ArtifactOut:
        """The job's artifact files with their size and sha256 (the manifest)."""
        response = await self._client.request("GET", f"/v1/jobs/{job_id}/artifacts")
        return ArtifactOut.model_validate(response.json())

    async def download(
        self,
        job_id: str,
        dest: str | PathLike[str],
        files: Sequence[str] | None = None,
        *,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> builtins.list[Path]:
        """Download and verify the artifact's files; see ``Client.jobs.download``. (File writes
        are plain blocking writes: chunks are small.)"""
        root = Path(dest)
        written: builtins.list[Path] = []
        for entry in select_files(await self.artifacts(job_id), files):
            target = target_path(root, entry.path)
            url = f"/v1/jobs/{job_id}/artifacts/{quote(entry.path, safe='/')}"
            drops = 0
            while True:
                sink = FileSink(
                    target, expected_sha256=entry.sha256, expected_size=entry.size, name=entry.path
                )
                try:
                    async with self._client._stream(url) as response:
                        async for chunk in response.aiter_bytes():
                            sink.write(chunk)
                            if on_progress is not None:
                                on_progress(entry.path, sink.written, entry.size)
                        header = response.headers.get("X-Checksum-Sha256")
                except httpx.TransportError as exc:
                    sink.abort()
                    delay = self._client._settings.delay(drops, None)
                    if delay is None:
                        raise ConnectionFailed(self._client.base_url, exc) from exc
                    await self._client._sleep(delay)
                    drops += 1
                    continue
                except BaseException:
                    sink.abort()
                    raise
                written.append(sink.commit(header))
                break
        return written
