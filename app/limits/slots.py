"""Admission control in front of the database pool.

Routes are sync: each request takes a worker thread for every hop (its key check, then the
route), and holds its pooled connection from the first query to the end. With more requests
in flight than connections, worker threads block in the pool's checkout while the requests
that hold connections wait for a free thread to go on: under load that convoy turned into
seconds of latency and checkout timeouts (503s) at 200 clients (bench/load.py).

So a request takes a slot before its session exists, waiting in the event loop (no thread,
no connection), first come first served; there are as many slots as pooled connections, so a
slot holder never waits on the pool. After ``timeout`` seconds of waiting: 503 with
Retry-After, as for a pool checkout timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from slimforge.app.errors import ServiceUnavailable

__all__ = ["SessionSlots"]


class SessionSlots:
    """At most ``size`` requests of this process hold a database session at once."""

    def __init__(self, *, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore = asyncio.Semaphore(size)

    def _for_this_loop(self) -> asyncio.Semaphore:
        # One event loop per server process; tests may drive the app from several loops in
        # turn (a semaphore belongs to the loop it first waited in).
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._semaphore = loop, asyncio.Semaphore(self.size)
        return self._semaphore

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold a slot for the block; 503 after ``timeout`` seconds without one."""
        semaphore = self._for_this_loop()
        try:
            async with asyncio.timeout(self.timeout):
                await semaphore.acquire()
        except TimeoutError:
            raise ServiceUnavailable("the service is busy; retry shortly", retry_after=1) from None
        try:
            yield
        finally:
            semaphore.release()
