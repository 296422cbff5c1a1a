"""Resource limits of the API: per-tenant quotas at submit, the request rate limit and the
request body size limit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.tiny import save_tiny_llama
from slimforge.app.auth.service import get_or_create_tenant
from slimforge.app.db import make_engine, make_session_factory, session_scope, utcnow
from slimforge.app.jobs.models import Job
from slimforge.app.limits.middleware import RequestLimitsMiddleware
from slimforge.app.limits.quotas import effective_quotas, set_tenant_quota
from slimforge.app.main import create_app
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings
from slimforge.cli import main
from tests.builders import SMOLLM2_HUB, job_body
from tests.conftest import make_key


def body(files: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    """A Hub model (not read at submit), calibration only, the server's default budget."""
    return job_body(
        {"id": SMOLLM2_HUB["id"]},
        files["calibration"],
        calibration_tokens=None,
        seq_len=None,
        **overrides,
    )


def set_quota(api: TestClient, tenant: str, **values: int | None) -> None:
    with session_scope(api.app.state.session_factory) as session:  # type: ignore[attr-defined]
        set_tenant_quota(session, tenant_name=tenant, **values)


@contextmanager
def client_for(settings: Settings) -> Iterator[TestClient]:
    upgrade(settings)
    app = create_app(settings)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def assert_error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code
    return error


# --- quotas -------------------------------------------------------------------------------


def test_concurrent_jobs_quota_is_a_429_naming_the_limit(
    api: TestClient, auth, settings: Settings, text_files
) -> None:
    settings.quota_concurrent_jobs = 2
    h = auth("acme")
    ids = [api.post("/v1/jobs", json=body(text_files), headers=h).json()["id"] for _ in range(2)]
    r = api.post("/v1/jobs", json=body(text_files), headers=h)
    error = assert_error(r, 429, "quota_exceeded")
    assert r.headers["retry-after"] == "5"
    assert "at most 2 jobs queued or running" in error["message"]
    assert "concurrent_jobs" in error["message"]
    assert error["details"] == {"limit": "concurrent_jobs", "value": 2}
    # Other tenants have their own count.
    assert api.post("/v1/jobs", json=body(text_files), headers=auth("other")).status_code == 202
    # A job that ends frees its slot.
    assert api.post(f"/v1/jobs/{ids[0]}/cancel", headers=h).status_code == 202
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 202
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 429


def test_a_tenant_override_raises_or_lifts_the_default(
    api: TestClient, auth, settings: Settings, text_files
) -> None:
    settings.quota_concurrent_jobs = 1
    h = auth("big")
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 202
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 429
    set_quota(api, "big", concurrent_jobs=3)
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 202
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 202
    r = api.post("/v1/jobs", json=body(text_files), headers=h)
    assert "at most 3 jobs" in assert_error(r, 429, "quota_exceeded")["message"]
    set_quota(api, "big", concurrent_jobs=0)  # 0: unlimited for this tenant
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 202
    set_quota(api, "big")  # back to the default
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 429
    # A tenant's lower quota applies where the default is unlimited.
    settings.quota_concurrent_jobs = None
    set_quota(api, "small", concurrent_jobs=1)
    hs = auth("small")
    assert api.post("/v1/jobs", json=body(text_files), headers=hs).status_code == 202
    assert api.post("/v1/jobs", json=body(text_files), headers=hs).status_code == 429


def test_an_idempotent_replay_is_not_counted(
    api: TestClient, auth, settings: Settings, text_files
) -> None:
    settings.quota_concurrent_jobs = 1
    settings.quota_jobs_per_day = 1
    h = {**auth(), "Idempotency-Key": "release-1"}
    first = api.post("/v1/jobs", json=body(text_files), headers=h)
    assert first.status_code == 202
    for _ in range(3):
        again = api.post("/v1/jobs", json=body(text_files), headers=h)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
    other = api.post("/v1/jobs", json=body(text_files), headers={**h, "Idempotency-Key": "2"})
    assert other.status_code == 429


def test_jobs_per_day_counts_a_rolling_window_and_says_when_to_retry(
    api: TestClient, auth, settings: Settings, text_files
) -> None:
    settings.quota_jobs_per_day = 2
    h = auth()
    ids = [api.post("/v1/jobs", json=body(text_files), headers=h).json()["id"] for _ in range(2)]
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    now = utcnow()

    def age(job_id: str, hours: float) -> None:
        with session_scope(factory) as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(created_at=now - timedelta(hours=hours), status="succeeded")
            )

    age(ids[0], 23)  # leaves the window in one hour
    age(ids[1], 2)
    r = api.post("/v1/jobs", json=body(text_files), headers=h)
    error = assert_error(r, 429, "quota_exceeded")
    assert 3500 <= int(r.headers["retry-after"]) <= 3600
    assert "at most 2 jobs per 24 hours" in error["message"]
    assert "jobs_per_day" in error["message"]
    assert error["details"] == {"limit": "jobs_per_day", "value": 2}
    age(ids[0], 25)  # out of the window now
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 202
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 429


def test_model_size_quota_is_checked_at_submit_for_a_local_checkpoint(
    api: TestClient, auth, settings: Settings, text_files, tmp_path: Path
) -> None:
    model = save_tiny_llama(tmp_path / "tiny")
    settings.quota_max_model_params = 1000
    h = auth("acme")
    spec = body(text_files, model={"path": str(model)})
    r = api.post("/v1/jobs", json=spec, headers=h)
    error = assert_error(r, 422, "quota_exceeded")
    assert "max_model_params" in error["message"] and "1,000" in error["message"]
    assert error["details"]["value"] == 1000
    assert error["details"]["model_params"] > 1000
    # A Hub model cannot be read here: the worker checks it after loading.
    assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 202
    set_quota(api, "acme", max_model_params=10**9)
    assert api.post("/v1/jobs", json=spec, headers=h).status_code == 202


# --- request rate limit -------------------------------------------------------------------


def test_rate_limit_per_key_with_retry_after_and_health_exempt(tmp_path: Path, text_files) -> None:
    settings = Settings(
        home=tmp_path / "home", local_roots=[tmp_path], rate_limit_per_minute=6, rate_limit_burst=3
    )
    with client_for(settings) as api:
        h = {"Authorization": f"Bearer {make_key(settings, 'acme')}"}
        for _ in range(3):
            assert api.get("/v1/jobs", headers=h).status_code == 200
        r = api.get("/v1/jobs", headers=h)
        error = assert_error(r, 429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 10
        assert "6 requests per minute" in error["message"]
        # Probes and the dashboard files are never limited.
        for _ in range(10):
            assert api.get("/healthz").status_code == 200
            assert api.get("/readyz").status_code in (200, 503)
            assert api.get("/dashboard/nothing.js").status_code == 404
        # Another key, and callers without a valid key (counted by address), have their own.
        other = {"Authorization": f"Bearer {make_key(settings, 'acme')}"}
        assert api.get("/v1/jobs", headers=other).status_code == 200
        assert api.get("/v1/jobs").status_code == 401
        bad = {"Authorization": "Bearer sf_not-a-key"}
        assert api.get("/v1/jobs", headers=bad).status_code == 401
        assert api.get("/v1/jobs", headers={"Authorization": "Bearer sf_other"}).status_code == 401
        assert_error(api.get("/v1/jobs", headers=bad), 429, "rate_limited")
        # A rate-limited submit is refused before it reaches the service.
        r = api.post("/v1/jobs", json=body(text_files), headers=h)
        assert_error(r, 429, "rate_limited")


def _tiny_app() -> Starlette:
    async def ok(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    return Starlette(
        routes=[Route("/x", ok), Route("/healthz", ok), Route("/echo", echo, methods=["POST"])]
    )


def test_token_bucket_refills_with_the_clock(tmp_path: Path) -> None:
    now = [1000.0]
    settings = Settings(home=tmp_path, rate_limit_per_minute=60, rate_limit_burst=2)
    app = RequestLimitsMiddleware(
        _tiny_app(),
        settings=settings,
        clock=lambda: now[0],
        key_is_valid=lambda _scope, token: token == "good",
    )
    client = TestClient(app)
    good = {"Authorization": "Bearer good"}
    assert [client.get("/x", headers=good).status_code for _ in range(3)] == [200, 200, 429]
    r = client.get("/x", headers=good)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["details"] == {"limit_per_minute": 60, "burst": 2}
    now[0] += 0.5
    assert client.get("/x", headers=good).status_code == 429  # half a token
    now[0] += 0.5
    assert client.get("/x", headers=good).status_code == 200
    assert client.get("/x", headers=good).status_code == 429
    now[0] += 60  # refills to the burst, not beyond
    assert [client.get("/x", headers=good).status_code for _ in range(3)] == [200, 200, 429]
    # An invalid key shares its address's bucket, which is still full.
    bad = {"Authorization": "Bearer forged"}
    assert [client.get("/x", headers=bad).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/x").status_code == 429
    assert client.get("/healthz").status_code == 200


def test_rate_limit_zero_disables_it(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, rate_limit_per_minute=0)
    client = TestClient(RequestLimitsMiddleware(_tiny_app(), settings=settings))
    assert all(client.get("/x").status_code == 200 for _ in range(50))


# --- request body size --------------------------------------------------------------------


def test_oversized_bodies_are_a_413_by_length_and_while_streaming(
    tmp_path: Path, text_files
) -> None:
    settings = Settings(home=tmp_path / "home", local_roots=[tmp_path], max_request_bytes=4096)
    with client_for(settings) as api:
        h = {"Authorization": f"Bearer {make_key(settings, 'acme')}"}
        big = body(text_files, metadata={"note": "x" * 5000})
        r = api.post("/v1/jobs", json=big, headers=h)
        error = assert_error(r, 413, "payload_too_large")
        assert "4096 bytes" in error["message"] and "max_request_bytes" in error["message"]
        # Chunked (no Content-Length): counted while it arrives.
        raw = json.dumps(big).encode()
        chunks = iter([raw[i : i + 1000] for i in range(0, len(raw), 1000)])
        r = api.post("/v1/jobs", content=chunks, headers={**h, "Content-Type": "application/json"})
        assert_error(r, 413, "payload_too_large")
        # A chunked body under the limit reaches the API whole.
        raw = json.dumps(body(text_files)).encode()
        chunks = iter([raw[i : i + 100] for i in range(0, len(raw), 100)])
        r = api.post("/v1/jobs", content=chunks, headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 202, r.text
        assert api.post("/v1/jobs", json=body(text_files), headers=h).status_code == 202


def test_body_limit_on_a_bare_app(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, max_request_bytes=1024, rate_limit_per_minute=0)
    client = TestClient(RequestLimitsMiddleware(_tiny_app(), settings=settings))
    assert client.post("/echo", content=b"a" * 1024).text == "1024"
    assert client.post("/echo", content=b"a" * 1025).status_code == 413
    assert client.post("/echo", content=iter([b"a" * 600, b"a" * 424])).text == "1024"
    assert client.post("/echo", content=iter([b"a" * 600, b"a" * 425])).status_code == 413


def test_admin_set_quota_command(settings: Settings, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SLIMFORGE_HOME", str(settings.home))
    monkeypatch.delenv("SLIMFORGE_DATABASE_URL", raising=False)
    argv = ["admin", "set-quota", "--tenant", "acme", "--jobs-per-day", "5"]
    assert main([*argv, "--max-model-params", "0"]) == 0
    assert main(["admin", "set-quota", "--tenant", "acme", "--concurrent-jobs", "-1"]) == 2
    assert "concurrent_jobs must be 0 (unlimited) or more" in capsys.readouterr().err
    settings.quota_max_model_params = 10
    settings.quota_concurrent_jobs = 3
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        tenant = get_or_create_tenant(session, name="acme")
        quotas = effective_quotas(session, tenant_id=tenant.id, settings=settings)
    engine.dispose()
    assert (quotas.concurrent_jobs, quotas.jobs_per_day, quotas.max_model_params) == (3, 5, None)


def test_an_address_over_its_limit_gets_no_key_lookups(tmp_path: Path) -> None:
    lookups: list[str] = []

    def key_is_valid(_scope: Any, token: str) -> bool:
        lookups.append(token)
        return token == "good"

    settings = Settings(home=tmp_path, rate_limit_per_minute=60, rate_limit_burst=2)
    now = [0.0]
    app = RequestLimitsMiddleware(
        _tiny_app(), settings=settings, clock=lambda: now[0], key_is_valid=key_is_valid
    )
    client = TestClient(app)
    assert client.get("/x").status_code == 200
    assert client.get("/x", headers={"Authorization": "Bearer made-up-1"}).status_code == 200
    for i in range(5):  # the address is out of tokens: made-up keys cost no look-up
        r = client.get("/x", headers={"Authorization": f"Bearer made-up-{i + 2}"})
        assert r.status_code == 429
    assert lookups == ["made-up-1"]
    now[0] += 1  # one token back: a real key is looked up once, then remembered
    assert client.get("/x", headers={"Authorization": "Bearer good"}).status_code == 200
    assert client.get("/x", headers={"Authorization": "Bearer good"}).status_code == 200
    assert lookups == ["made-up-1", "good"]
