"""Token buckets kept in Redis, shared by every API process: one exact figure per key.

Each bucket is one Redis hash (``tokens``, ``updated``) changed by one Lua script, so a take is
atomic across processes and machines. The script reads the Redis server's clock: API
machines' clocks need not agree. A bucket expires once it would have refilled completely (it
then holds nothing a fresh bucket would not), so idle keys vanish on their own.

Redis unreachable (down, restarting, timing out): the request is allowed (fail open), a
warning is logged at most once per :data:`WARN_INTERVAL`, and Redis is left alone for
:data:`RETRY_AFTER_FAILURE` seconds so that a blackholed server does not add its timeout to
every request. A limiter outage must never become an API outage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

__all__ = ["KEY_PREFIX", "SharedTokenBuckets"]

log = logging.getLogger("slimforge.api")

KEY_PREFIX = "slimforge:ratelimit:"
# Short: Redis answers in well under a millisecond; a slower answer counts as unreachable.
SOCKET_TIMEOUT = 0.5
RETRY_AFTER_FAILURE = 1.0
WARN_INTERVAL = 60.0

# KEYS[1]: the bucket. ARGV: capacity, rate (tokens per second), cost (1: take, 0: only look),
# now (seconds; empty: the Redis server's clock). Returns the seconds until a token is
# available, as a string (Redis truncates a Lua number to an integer): "0" when allowed.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = capacity
else
  tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
end
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / rate
end
if cost == 0 then
  return tostring(wait)
end
if wait == 0 then
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'updated', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return tostring(wait)
"""


class SharedTokenBuckets:
    """Token buckets by key in Redis: ``capacity`` requests at once, refilled at ``rate`` per
    second, with the semantics of :class:`slimforge.app.limits.middleware.TokenBuckets`.

    ``clock`` (seconds) replaces the Redis server's clock, for tests; every process sharing
    the buckets must then use the same one. The client is opened lazily, one per event loop
    (an asyncio connection cannot move between loops); :meth:`aclose` closes it.
    """

    def __init__(
        self,
        *,
        url: str,
        capacity: int,
        rate: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.url = url
        self.capacity = capacity
        self.rate = rate
        self.clock = clock
        # Once a bucket has been idle this long it is full again: Redis may forget it.
        self._ttl_ms = math.ceil(capacity / rate * 1000) + 1000
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._script: AsyncScript | None = None
        self._skip_until = 0.0
        self._warned_at = -math.inf
        self._failing = False

    async def take(self, key: str) -> float:
        """Take a token for ``key``: 0 when allowed (or Redis unreachable), else the seconds
        until one is available."""
        return await self._run(key, cost=1)

    async def has_token(self, key: str) -> bool:
        """Whether ``key`` could take a token now (nothing is taken; True if Redis is
        unreachable)."""
        return await self._run(key, cost=0) == 0

    async def aclose(self) -> None:
        """Close the client (at the app's shutdown); a later call opens a new one."""
        client, self._client, self._loop, self._script = self._client, None, None, None
        if client is not None:
            await client.aclose()

    def _connect(self) -> AsyncScript:
        loop = asyncio.get_running_loop()
        if self._script is not None and self._loop is loop:
            return self._script
        # A client of another (finished) loop cannot be closed from this one: dropped.
        self._client = aioredis.Redis.from_url(
            self.url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=30,
        )
        self._loop = loop
        self._script = self._client.register_script(_TAKE)
        return self._script

    async def _run(self, key: str, *, cost: int) -> float:
        now = time.monotonic()
        if now < self._skip_until:
            return 0.0
        try:
            script = self._connect()
            at = "" if self.clock is None else repr(self.clock())
            args: list[str | int] = [self.capacity, repr(self.rate), cost, at, self._ttl_ms]
            answer = await script(keys=[KEY_PREFIX + key], args=args)
            wait = float(answer)
        except Exception as exc:  # whatever went wrong, the limiter does not refuse requests
            self._skip_until = now + RETRY_AFTER_FAILURE
            if now - self._warned_at >= WARN_INTERVAL:
                self._warned_at = now
                log.warning(
                    "rate limit: Redis unreachable (%s: %s); requests are not limited "
                    "until it answers",
                    type(exc).__name__,
                    exc,
                )
            self._failing = True
            return 0.0
        if self._failing:
            self._failing = False
            log.info("rate limit: Redis answers again; requests are limited")
        return wait
