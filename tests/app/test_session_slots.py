"""Admission control in front of the database pool (slimforge.app.limits.slots)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from slimforge.app.errors import ServiceUnavailable
from slimforge.app.limits.slots import SessionSlots
from slimforge.app.main import create_app
from slimforge.app.settings import Settings


def test_slots_are_served_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        slots = SessionSlots(size=1, timeout=5)
        order: list[int] = []

        async def request(n: int) -> None:
            async with slots.hold():
                order.append(n)
                await asyncio.sleep(0.01)

        tasks = []
        for n in range(5):
            tasks.append(asyncio.create_task(request(n)))
            await asyncio.sleep(0)  # each one queues before the next arrives
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_a_request_without_a_slot_in_time_gets_503_with_retry_after() -> None:
    async def scenario() -> ServiceUnavailable:
        slots = SessionSlots(size=1, timeout=0.05)
        async with slots.hold():
            with pytest.raises(ServiceUnavailable) as caught:
                async with slots.hold():
                    pass
        async with slots.hold():  # the slot came back
            pass
        return caught.value

    error = asyncio.run(scenario())
    assert error.status_code == 503 and error.headers == {"Retry-After": "1"}


def test_more_concurrent_requests_than_connections_all_succeed(
    postgres_url: str, tmp_path: Path
) -> None:
    """One pooled connection, 60 concurrent reads. Each read takes a worker thread twice (key
    check, route) and holds the connection in between; without slots the 40 worker threads
    all block in the pool's checkout while the request holding the connection waits for a
    thread: nothing moves until checkouts time out (503s). With slots every read succeeds."""
    from bench.services import fresh_database
    from slimforge.app.migrate import upgrade
    from tests.conftest import make_key

    settings = Settings(
        home=tmp_path,
        database_url=fresh_database(postgres_url, "slots_convoy"),
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout_seconds=2,
        rate_limit_per_minute=0,
    )
    upgrade(settings)
    key = make_key(settings, "acme")
    app = create_app(settings)

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers, timeout=30
        ) as client:
            answers = await asyncio.gather(*(client.get("/v1/jobs") for _ in range(60)))
        return [r.status_code for r in answers]

    try:
        statuses = asyncio.run(scenario())
    finally:
        app.state.engine.dispose()
    assert statuses == [200] * 60
