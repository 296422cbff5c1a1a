"""A light HTTP/1.1 load generator for bench/load.py.

httpx costs about 1.5 ms of CPU per request; on a 2-core machine that the API, PostgreSQL and
the generator share, the generator then takes a fifth of the machine from the server it
measures. This client speaks just enough HTTP/1.1 for the benchmark (one keep-alive
connection, a ``Content-Length`` body each way) for a few tens of microseconds a request.

Two ways to drive clients:
- ``closed_loop``: each client sends its next request when the last one answered (the most
  load N clients can make; by Little's law latency ≈ N / throughput),
- ``open_loop``: each client sends one request every ``interval`` seconds, like a CI job
  polling its job's status, whatever the server's latency (requests are never skipped, so a
  slow server shows as latency rather than as fewer requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Conn", "Result", "closed_loop", "open_connections", "open_loop"]


class Conn:
    """One keep-alive HTTP/1.1 connection that sends one request at a time."""

    def __init__(self, host: str, port: int, headers: dict[str, str], timeout: float) -> None:
        self.host, self.port, self.headers, self.timeout = host, port, headers, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(
        cls, host: str, port: int, headers: dict[str, str], timeout: float = 35.0
    ) -> Conn:
        conn = cls(host, port, headers, timeout)
        await conn._connect()
        return conn

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send a request and return (status, body); a JSON ``body`` is encoded here. After a
        failure (timeout, reset) the connection is dropped and the next request opens one."""
        try:
            if self.writer is None:
                await self._connect()
            async with asyncio.timeout(self.timeout):
                return await self._exchange(method, path, body, headers)
        except BaseException:
            await self.close()
            raise

    async def _exchange(
        self,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str] | None,
    ) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:  # every API answer but the event stream has one; the benchmark reads no stream
            raise RuntimeError(f"no Content-Length in the answer to {method} {path}")
        end = lower.index(b"\r\n", at + 2)
        length = int(lower[at + len(b"\r\ncontent-length:") : end])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def open_connections(
    host: str, port: int, headers: Callable[[int], dict[str, str]], count: int, timeout: float
) -> list[Conn]:
    """``count`` connections (client i sends ``headers(i)``), opened before any timing; a
    request not answered within ``timeout`` seconds counts as an error."""
    conns = await asyncio.gather(
        *(Conn.open(host, port, headers(i), timeout) for i in range(count))
    )
    await asyncio.gather(*(c.request("GET", "/healthz") for c in conns))
    return list(conns)


@dataclass
class Result:
    operation: str
    clients: int
    mode: str = "closed loop"
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: dict[str, int] = field(default_factory=dict)  # status code or exception -> count
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def record(self, start: float, outcome: str | None) -> None:
        if outcome is None:
            self.latencies.append(time.perf_counter() - start)
        else:
            self.errors[outcome] = self.errors.get(outcome, 0) + 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.error_count

    def percentile_ms(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# A request: (connection, client index) -> (status, body).
Request = Callable[[Conn, int], Awaitable[tuple[int, bytes]]]


async def _send(conn: Conn, i: int, request: Request) -> str | None:
    """None for a 2xx answer, else the status code or the exception's name."""
    try:
        status, _ = await request(conn, i)
        return None if 200 <= status < 300 else str(status)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, RuntimeError) as exc:
        return type(exc).__name__


async def closed_loop(
    operation: str, conns: list[Conn], duration: float, request: Request
) -> Result:
    """Every client sends its next request when the last answered, for ``duration`` s."""
    result = Result(operation, len(conns))
    end = time.perf_counter() + duration

    async def loop(conn: Conn, i: int) -> None:
        while (start := time.perf_counter()) < end:
            result.record(start, await _send(conn, i, request))

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(c, i) for i, c in enumerate(conns)))
    result.seconds = time.perf_counter() - t0
    return result


async def open_loop(
    operation: str, conns: list[Conn], duration: float, interval: float, request: Request
) -> Result:
    """Every client sends one request each ``interval`` s (starts spread at random over the
    first interval); a request whose time comes while the last is in flight goes right after
    it, so a slow server shows as latency measured from the planned time, not as a lower rate
    (no coordinated omission)."""
    result = Result(operation, len(conns), mode=f"every {interval:g} s")
    t0 = time.perf_counter()

    async def loop(conn: Conn, i: int) -> None:
        planned = t0 + random.uniform(0, interval)
        while planned < t0 + duration:
            await asyncio.sleep(max(0.0, planned - time.perf_counter()))
            outcome = await _send(conn, i, request)
            result.record(planned, outcome)  # latency from when it should have been sent
            planned += interval

    await asyncio.gather(*(loop(c, i) for i, c in enumerate(conns)))
    result.seconds = time.perf_counter() - t0
    return result
