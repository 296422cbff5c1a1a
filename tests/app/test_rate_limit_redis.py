"""The shared (Redis) rate limiter: one figure across API processes, against a real Redis.

Each ``create_app`` (or bare middleware) has its own state, as a separate process would: two
of them sharing one Redis stand for two API processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.services import free_port
from slimforge.app.limits import shared
from slimforge.app.limits.middleware import RequestLimitsMiddleware
from slimforge.app.main import create_app
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings
from tests.conftest import make_key

pytestmark = pytest.mark.services


@pytest.fixture
def limiter_url(redis_url: str) -> Iterator[str]:
    """A database of the session's Redis for these tests only, emptied before each."""
    url = redis_url.rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.close()


def _tiny_app() -> Starlette:
    async def ok(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/x", ok), Route("/healthz", ok)])


def test_two_apps_sharing_redis_allow_the_burst_once_then_429(
    tmp_path: Path, limiter_url: str
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        local_roots=[tmp_path],
        rate_limit_per_minute=1,  # no token comes back during the test
        rate_limit_burst=4,
        rate_limit_redis_url=limiter_url,
    )
    upgrade(settings)
    h = {"Authorization": f"Bearer {make_key(settings, 'acme')}"}
    apps = [create_app(settings), create_app(settings)]  # two processes' worth of state
    with ExitStack() as stack:
        one, two = (stack.enter_context(TestClient(app)) for app in apps)
        codes = [c.get("/v1/jobs", headers=h).status_code for c in (one, two, one, two)]
        assert codes == [200, 200, 200, 200]  # the burst, spread over both
        for client in (one, two):
            r = client.get("/v1/jobs", headers=h)
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "rate_limited"
            assert 50 <= int(r.headers["retry-after"]) <= 60  # one token a minute
        # Probes stay exempt; another key has its own bucket.
        assert all(one.get("/healthz").status_code == 200 for _ in range(5))
        other = {"Authorization": f"Bearer {make_key(settings, 'acme')}"}
        assert two.get("/v1/jobs", headers=other).status_code == 200
    for app in apps:
        app.state.engine.dispose()
    # Each bucket expires once it would be full again: idle keys do not stay in Redis.
    store = redis.Redis.from_url(limiter_url)
    keys = store.keys(shared.KEY_PREFIX + "*")
    assert len(keys) == 2 and all(0 < store.pttl(k) <= 4 * 60_000 + 1000 for k in keys)
    store.close()


def test_shared_buckets_refill_with_the_clock(tmp_path: Path, limiter_url: str) -> None:
    now = [1000.0]
    settings = Settings(
        home=tmp_path,
        rate_limit_per_minute=60,
        rate_limit_burst=2,
        rate_limit_redis_url=limiter_url,
    )
    apps = [
        RequestLimitsMiddleware(
            _tiny_app(),
            settings=settings,
            clock=lambda: now[0],
            key_is_valid=lambda _scope, token: token == "good",
        )
        for _ in range(2)
    ]
    good = {"Authorization": "Bearer good"}
    with TestClient(apps[0]) as one, TestClient(apps[1]) as two:
        assert [c.get("/x", headers=good).status_code for c in (one, two, one)] == [200, 200, 429]
        r = two.get("/x", headers=good)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["details"] == {"limit_per_minute": 60, "burst": 2}
        now[0] += 0.5
        assert one.get("/x", headers=good).status_code == 429  # half a token
        now[0] += 0.5
        assert two.get("/x", headers=good).status_code == 200
        assert one.get("/x", headers=good).status_code == 429
        now[0] += 60  # refills to the burst, not beyond
        assert [c.get("/x", headers=good).status_code for c in (two, one, two)] == [200, 200, 429]
        # Without a valid key: the address's shared bucket, which is still full.
        bad = {"Authorization": "Bearer forged"}
        assert [c.get("/x", headers=bad).status_code for c in (one, two, one)] == [200, 200, 429]
        assert two.get("/x").status_code == 429
        assert two.get("/healthz").status_code == 200


def test_the_redis_servers_clock_refills_the_buckets(tmp_path: Path, limiter_url: str) -> None:
    settings = Settings(
        home=tmp_path,
        rate_limit_per_minute=120,  # a token every half second
        rate_limit_burst=1,
        rate_limit_redis_url=limiter_url,
    )
    with TestClient(RequestLimitsMiddleware(_tiny_app(), settings=settings)) as client:
        assert client.get("/x").status_code == 200
        r = client.get("/x")
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        time.sleep(0.6)
        assert client.get("/x").status_code == 200


def test_redis_down_serves_every_request_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(
        home=tmp_path,
        rate_limit_per_minute=60,
        rate_limit_burst=1,
        rate_limit_redis_url=nothing_there,
    )
    app = RequestLimitsMiddleware(
        _tiny_app(), settings=settings, key_is_valid=lambda _scope, token: token == "good"
    )
    with caplog.at_level(logging.WARNING, logger="slimforge.api"), TestClient(app) as client:
        assert all(client.get("/x").status_code == 200 for _ in range(5))
        assert all(
            client.get("/x", headers={"Authorization": "Bearer good"}).status_code == 200
            for _ in range(3)
        )
    warnings = [r.getMessage() for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "not limited" in warnings[0]


def test_limits_apply_again_once_redis_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_broker_restart import persistent_redis

    monkeypatch.setattr(shared, "RETRY_AFTER_FAILURE", 0.0)  # try Redis at every request
    with persistent_redis(tmp_path / "redis") as server:
        settings = Settings(
            home=tmp_path,
            rate_limit_per_minute=1,
            rate_limit_burst=1,
            rate_limit_redis_url=server.url,
        )
        with TestClient(RequestLimitsMiddleware(_tiny_app(), settings=settings)) as client:
            assert [client.get("/x").status_code for _ in range(2)] == [200, 429]
            server.stop()
            assert [client.get("/x").status_code for _ in range(3)] == [200, 200, 200]
            server.start()  # same port; the bucket was kept in the append-only file
            assert client.get("/x").status_code == 429
