"""Request limits as one ASGI middleware: a token-bucket rate limit per API key (per client
address without a valid key) and a maximum request body size.

By default the buckets live in this process's memory (the embedded mode has no Redis): with N
API processes (uvicorn workers, replicas) a client gets up to N times ``rate_limit_per_minute``.
With ``rate_limit_redis_url`` set they live in Redis (:mod:`slimforge.app.limits.shared`), shared by
every process: one exact figure. An unreachable Redis limits nothing (fail open), it never
fails a request.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slimforge.app.auth.service import hash_key, key_is_live
from slimforge.app.limits.shared import SharedTokenBuckets
from slimforge.app.observability import current_request_id
from slimforge.app.settings import Settings

__all__ = ["EXEMPT_PATHS", "RequestLimitsMiddleware", "TokenBuckets"]

# Probes and the dashboard's static files are never rate limited.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/"})  # probes, scrapes, the page
EXEMPT_PREFIXES = ("/dashboard/",)
# How long a key's validity is remembered (it only picks the bucket, it authorises nothing).
KEY_CACHE_SECONDS = 60.0
KEY_CACHE_SIZE = 10_000
MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets by key: ``capacity`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, *, capacity: int, rate: float, clock: Callable[[], float]):
        self.capacity = capacity
        self.rate = rate
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0 when allowed, else the seconds until one is available."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(float(self.capacity), now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.capacity), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def has_token(self, key: str) -> bool:
        """Whether ``key`` could take a token now (nothing is taken)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return True
        elapsed = max(0.0, self.clock() - bucket.updated)
        return bucket.tokens + elapsed * self.rate >= 1.0

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely holds no information: forget it.
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.capacity
        ]
        for k in full:
            del self._buckets[k]


def _error_body(code: str, message: str, details: dict[str, Any]) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "details": details}
    if (request_id := current_request_id()) is not None:
        error["request_id"] = request_id
    return json.dumps({"error": error}).encode()


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimitsMiddleware:
    """``app.add_middleware(RequestLimitsMiddleware, settings=settings)``.

    ``clock`` (seconds; default monotonic here, and the Redis server's clock for shared
    buckets) and ``key_is_valid`` (a key → whether it is a live API key; default: a cached
    lookup in the app's database) can be replaced by tests.

    With ``rate_limit_redis_url`` the buckets are in Redis: its client belongs to this app
    (this middleware is built once per app) and is closed at the app's shutdown.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        clock: Callable[[], float] | None = None,
        key_is_valid: Callable[[Scope, str], bool] | None = None,
    ):
        self.app = app
        self.clock = clock or time.monotonic
        self.max_bytes = settings.max_request_bytes
        self.per_minute = settings.rate_limit_per_minute or 0
        self.burst = settings.rate_limit_burst or max(1, self.per_minute // 6)
        rate = self.per_minute / 60.0
        self.buckets: TokenBuckets | None = None
        self.shared: SharedTokenBuckets | None = None
        if self.per_minute > 0 and settings.rate_limit_redis_url:
            self.shared = SharedTokenBuckets(
                url=settings.rate_limit_redis_url, capacity=self.burst, rate=rate, clock=clock
            )
        elif self.per_minute > 0:
            self.buckets = TokenBuckets(capacity=self.burst, rate=rate, clock=self.clock)
        self.key_is_valid = key_is_valid or _key_in_database
        self._known: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.shared is not None:
            await self.app(scope, receive, _closing_at_shutdown(send, self.shared))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        limited = self.buckets is not None or self.shared is not None
        if limited and not _exempt(scope.get("path", "")):
            wait = await self._take(await self._client_key(scope, headers))
            if wait > 0:
                retry = max(1, math.ceil(wait))
                message = (
                    f"rate limit exceeded: at most {self.per_minute} requests per minute "
                    f"(bursts of {self.burst}); retry in {retry} s"
                )
                body = _error_body(
                    "rate_limited",
                    message,
                    {"limit_per_minute": self.per_minute, "burst": self.burst},
                )
                await _respond(send, 429, body, [(b"retry-after", str(retry).encode())])
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False  # the server rejects a malformed Content-Length itself
            if too_big:
                await self._too_large(send)
                return
        elif b"transfer-encoding" in headers:
            # A chunked body: read it here (at most max_bytes) and hand it on whole.
            messages, ok = await self._read_limited(receive)
            if not ok:
                await self._too_large(send)
                return
            receive = _replay(messages, receive)
        await self.app(scope, receive, send)

    async def _take(self, key: str) -> float:
        if self.shared is not None:
            return await self.shared.take(key)
        assert self.buckets is not None
        return self.buckets.take(key)

    async def _has_token(self, key: str) -> bool:
        if self.shared is not None:
            return await self.shared.has_token(key)
        assert self.buckets is not None
        return self.buckets.has_token(key)

    async def _read_limited(self, receive: Receive) -> tuple[list[Message], bool]:
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, True  # a disconnect: let the app see it
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                return messages, False
            if not message.get("more_body", False):
                return messages, True

    async def _too_large(self, send: Send) -> None:
        message = (
            f"request body too large: at most {self.max_bytes} bytes are accepted "
            "(max_request_bytes)"
        )
        body = _error_body("payload_too_large", message, {"max_bytes": self.max_bytes})
        await _respond(send, 413, body, [(b"connection", b"close")])

    async def _client_key(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        client = scope.get("client")
        address = "ip:" + (client[0] if client else "unknown")
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            digest = hash_key(token)
            if await self._valid(scope, token, digest, address):
                return "key:" + digest
        return address

    async def _valid(self, scope: Scope, token: str, digest: str, address: str) -> bool:
        now = self.clock()
        cached = self._known.get(digest)
        if cached is not None and now - cached[1] < KEY_CACHE_SECONDS:
            return cached[0]
        if not await self._has_token(address):
            # An address over its limit gets no database look-ups: a flood of made-up keys
            # is refused by address, without reaching the database.
            return False
        try:
            valid = await anyio.to_thread.run_sync(self.key_is_valid, scope, token)
        except Exception:  # the database is down: count the caller by address meanwhile
            return False
        self._known[digest] = (valid, now)
        self._known.move_to_end(digest)
        while len(self._known) > KEY_CACHE_SIZE:
            self._known.popitem(last=False)
        return valid


def _exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def _closing_at_shutdown(send: Send, shared: SharedTokenBuckets) -> Send:
    # The app has no lifespan hook of its own: the shutdown message passes through here.
    async def sending(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await shared.aclose()
        await send(message)

    return sending


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()  # afterwards: disconnect notices from the server

    return replayed


def _key_in_database(scope: Scope, token: str) -> bool:
    factory = scope["app"].state.session_factory
    with factory() as session:
        return key_is_live(session, key=token)
