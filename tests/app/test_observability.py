"""/metrics (HTTP and job metrics, one registry per app), request ids and JSON request logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from slimforge.app.auth.service import get_or_create_tenant
from slimforge.app.db import session_scope
from slimforge.app.jobs.models import Job
from slimforge.app.main import create_app
from slimforge.app.migrate import upgrade
from slimforge.app.observability import configure_logging
from slimforge.app.observability.logging import JsonFormatter, new_request_id
from slimforge.app.observability.metrics import JobsCollector
from slimforge.app.settings import Settings


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of a Prometheus text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


class Capture(logging.Handler):
    """Every record of the process, formatted as the API formats them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def add_job(settings: Settings, status: str, metrics: dict[str, Any] | None = None) -> None:
    with session_scope(create_app(settings).state.session_factory) as session:
        tenant = get_or_create_tenant(session, name="acme")
        session.add(
            Job(
                tenant_id=tenant.id,
                status=status,
                method="svd",
                spec={},
                request_hash="x",
                metrics=metrics or {},
            )
        )


# --- metrics ---------------------------------------------------------------------------------


def test_http_metrics_use_the_route_template(api: TestClient, auth) -> None:
    headers = auth()
    for job_id in ("job_a", "job_b"):
        assert api.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 404
    assert api.get("/no/such/page").status_code == 404
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    route = "/v1/jobs/{job_id}"
    assert (
        value(text, "slimforge_http_requests_total", method="GET", route=route, status="404") == 2
    )
    assert (
        value(text, "slimforge_http_request_duration_seconds_count", method="GET", route=route) == 2
    )
    assert (
        value(
            text, "slimforge_http_requests_total", method="GET", route="<unmatched>", status="404"
        )
        == 1
    )
    assert "job_a" not in text and "/no/such/page" not in text


def test_job_metrics_come_from_the_database(api: TestClient, settings: Settings) -> None:
    for status in ("queued", "queued", "running", "failed"):
        add_job(settings, status)
    for seconds, gpu in ((1.0, 100), (2.0, 300), (3.0, 200)):
        add_job(
            settings,
            "succeeded",
            {
                "stage_seconds": {"loading": seconds, "compressing": 10 * seconds},
                "peak_gpu_bytes": gpu,
                "peak_rss_bytes": 1000,
            },
        )
    text = api.get("/metrics").text
    assert value(text, "slimforge_metrics_database_up") == 1
    assert value(text, "slimforge_jobs", status="queued") == 2
    assert value(text, "slimforge_jobs", status="running") == 1
    assert value(text, "slimforge_jobs", status="succeeded") == 3
    assert value(text, "slimforge_jobs", status="cancelled") == 0
    assert value(text, "slimforge_queue_depth") == 2
    assert value(text, "slimforge_recent_jobs") == 4  # ended jobs; the failed one has no timings
    stage = "slimforge_recent_job_stage_seconds"
    assert value(text, stage, stage="compressing", quantile="0.5") == 20.0
    assert value(text, stage, stage="compressing", quantile="1.0") == 30.0
    assert value(text, stage, stage="loading", quantile="0.9") == 3.0
    assert value(text, "slimforge_recent_job_stage_samples", stage="loading") == 3
    assert value(text, "slimforge_recent_job_peak_gpu_bytes", stat="last") == 200  # newest
    assert value(text, "slimforge_recent_job_peak_gpu_bytes", stat="max") == 300
    assert value(text, "slimforge_recent_job_peak_rss_bytes", stat="max") == 1000


def test_each_app_has_its_own_registry(settings: Settings) -> None:
    upgrade(settings)
    first, second = create_app(settings), create_app(settings)
    with TestClient(first) as a, TestClient(second) as b:
        a.get("/healthz")
        a.get("/healthz")
        b.get("/healthz")
        labels = {"method": "GET", "route": "/healthz", "status": "200"}
        assert value(a.get("/metrics").text, "slimforge_http_requests_total", **labels) == 2
        assert value(b.get("/metrics").text, "slimforge_http_requests_total", **labels) == 1


def test_metrics_can_be_turned_off(tmp_path) -> None:
    settings = Settings(home=tmp_path / "home", metrics_enabled=False)
    upgrade(settings)
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/healthz").headers["x-request-id"]  # request ids stay


def test_a_database_outage_does_not_break_the_scrape() -> None:
    def broken() -> Any:
        raise OperationalError("SELECT 1", {}, Exception("down"))

    collector = JobsCollector(broken, recent_jobs=10)  # type: ignore[arg-type]
    families = list(collector.collect())
    assert [f.name for f in families] == ["slimforge_metrics_database_up"]
    assert families[0].samples[0].value == 0


# --- request ids and logs --------------------------------------------------------------------


def test_request_ids_are_kept_when_sane_and_made_up_otherwise(api: TestClient) -> None:
    assert api.get("/healthz", headers={"X-Request-ID": "abc-123.x"}).headers["x-request-id"] == (
        "abc-123.x"
    )
    for bad in ("a" * 200, "bad id", "<script>", ""):
        got = api.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert got != bad and len(got) == 32
    ids = {api.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert new_request_id("ok:1") == "ok:1"


def test_error_bodies_carry_the_request_id(api: TestClient, auth) -> None:
    r = api.get("/v1/jobs/job_x", headers={**auth(), "X-Request-ID": "req-404"})
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "req-404"
    assert r.json()["error"]["request_id"] == "req-404"
    r = api.post("/v1/jobs", headers={**auth(), "X-Request-ID": "req-422"}, json={})
    assert r.status_code == 422 and r.json()["error"]["request_id"] == "req-422"


def test_unhandled_errors_carry_the_request_id(settings: Settings, logs: Capture) -> None:
    upgrade(settings)
    app = create_app(settings)

    def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert r.json()["error"]["request_id"] == "req-500"
    assert r.headers["x-request-id"] == "req-500"
    access = [json.loads(line) for line in logs.lines if '"slimforge.access"' in line]
    assert access[-1]["status"] == 500 and access[-1]["level"] == "error"
    traceback = [json.loads(line) for line in logs.lines if "unhandled error" in line]
    assert traceback and traceback[0]["request_id"] == "req-500"


def test_each_request_logs_one_json_line(api: TestClient, auth, logs: Capture) -> None:
    api.get("/v1/jobs", headers={**auth(), "X-Request-ID": "req-log-1"})
    lines = [json.loads(line) for line in logs.lines]
    mine = [e for e in lines if e.get("request_id") == "req-log-1"]
    assert len(mine) == 1
    entry = mine[0]
    assert entry["logger"] == "slimforge.access" and entry["level"] == "info"
    assert entry["method"] == "GET" and entry["route"] == "/v1/jobs" and entry["status"] == 200
    assert isinstance(entry["duration_ms"], float)
    assert {"time", "message"} <= entry.keys()


def test_keys_tokens_and_secrets_never_reach_the_log(api: TestClient, auth, logs: Capture) -> None:
    key = auth()["Authorization"].removeprefix("Bearer ")
    token = "hf_secretTOKEN0123456789"
    fake = "sf_secretKEY0123456789"
    valid = {"Authorization": f"Bearer {key}", "X-Request-ID": "req-secret"}
    assert api.put("/v1/credentials/hub", headers=valid, json={"token": token}).status_code == 200
    assert api.post("/v1/webhooks/secret", headers=valid).status_code == 201  # shown once
    webhook_secret = api.post("/v1/webhooks/secret", headers=valid).json()["secret"]
    api.post("/v1/jobs?token=" + token, headers=valid, json={"token": token, "secret": "whsec_x1"})
    api.get(f"/v1/jobs/{token}", headers={"Authorization": f"Bearer {fake}"})
    # The server's records only: the test client's own (httpx) lines print the URLs it sent.
    server = [line for line in logs.lines if '"logger": "httpx' not in line]
    assert any('"req-secret"' in line for line in server)
    everything = "\n".join(server)
    for secret in (key, fake, token, webhook_secret, "sf_secret", "hf_secret", "whsec_"):
        assert secret not in everything


def test_configure_logging_writes_json_lines(capsys, settings: Settings) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(settings)
        logging.getLogger("slimforge.test").warning("hello %s", "world")
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("uvicorn.access").disabled = False
    entry = json.loads(line)
    assert entry["message"] == "hello world" and entry["level"] == "warning"
    assert entry["logger"] == "slimforge.test"
