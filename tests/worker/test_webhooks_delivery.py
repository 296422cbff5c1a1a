"""Webhook deliveries to a real local receiver: signing, retries, the delivery log, and the hook
in the runner (a real job on a tiny model)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bench.tiny import save_tiny_llama
from slimforge.app.settings import Settings
from slimforge.app.webhooks.models import WebhookDelivery
from slimforge.contract.signing import WebhookVerificationError, verify_webhook
from slimforge.worker.runner import run_job
from slimforge.worker.webhooks import DELIVER_WEBHOOK_TASK, _pinned, deliver, emit


@dataclass
class Receiver:
    """Answers each POST with the next status of ``statuses`` (the last one repeats) and
    checks every signature with the public verifier."""

    secret: str
    statuses: list[int]
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def receiver(secret: str, statuses: list[int]) -> Iterator[Receiver]:
    state = Receiver(secret, statuses)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                payload = verify_webhook(body, self.headers, state.secret)
                verified = True
            except WebhookVerificationError:
                payload, verified = json.loads(body), False
            index = min(len(state.received), len(state.statuses) - 1)
            state.received.append(
                {"headers": dict(self.headers), "payload": payload, "verified": verified}
            )
            self.send_response(state.statuses[index] if verified else 401)
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/slimforge"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def local_settings(settings: Settings) -> Settings:
    # The same object the API uses: the receiver is on loopback, and retries come at once.
    settings.webhook_allow_private_addresses = True
    settings.webhook_retry_delays = [0.0, 0.0, 0.0, 0.0]
    return settings


def new_secret(api: TestClient, h: dict[str, str]) -> str:
    r = api.post("/v1/webhooks/secret", headers=h)
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def submit(api: TestClient, h: dict[str, str], model: Path, files, **extra: Any) -> str:
    body: dict[str, Any] = {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(files["calibration"]), "max_tokens": 2048, "seq_len": 128},
        **extra,
    }
    r = api.post("/v1/jobs", json=body, headers=h)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def rows(api: TestClient, job_id: str) -> list[WebhookDelivery]:
    with api.app.state.session_factory() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
        return list(session.scalars(query.order_by(WebhookDelivery.id)))


def deliver_all(api: TestClient, settings: Settings, delivery_id: int) -> int:
    """What the Celery task does, without the broker: attempts until done; returns how many."""
    factory = api.app.state.session_factory
    attempts = 0
    next_id: int | None = delivery_id
    while next_id is not None:
        attempts += 1
        following = deliver(factory, settings, next_id)
        next_id = following.delivery_id if following else None
    return attempts


def test_a_finished_job_delivers_its_signed_event_and_retries_a_failed_attempt(
    api: TestClient, auth, local_settings: Settings, text_files, tmp_path: Path
) -> None:
    h = auth()
    secret = new_secret(api, h)
    model = save_tiny_llama(tmp_path / "tiny")
    with receiver(secret, [500, 200]) as hook:
        # Default events: the terminal ones, so no job.started.
        job_id = submit(api, h, model, text_files, webhook={"url": hook.url})
        factory = api.app.state.session_factory
        assert run_job(settings=local_settings, session_factory=factory, job_id=job_id) == (
            "succeeded"
        )
        (first,) = rows(api, job_id)
        assert (first.event_type, first.state, first.attempt) == ("job.succeeded", "pending", 1)
        # The runner queued it for the worker: a message on the embedded broker's queue.
        queued = [p.read_text() for p in (local_settings.broker_folder / "queue").iterdir()]
        assert any(DELIVER_WEBHOOK_TASK in text for text in queued)

        assert deliver_all(api, local_settings, first.id) == 2
    failed, succeeded = rows(api, job_id)
    assert (failed.attempt, failed.state, failed.status_code) == (1, "retrying", 500)
    assert failed.error == "HTTP 500" and failed.duration_ms is not None
    assert (succeeded.attempt, succeeded.state, succeeded.status_code) == (2, "succeeded", 200)
    assert succeeded.error is None and succeeded.finished_at is not None
    # Both attempts carried the same webhook-id and body, each verified by the receiver.
    assert [r["verified"] for r in hook.received] == [True, True]
    ids = {r["headers"]["webhook-id"] for r in hook.received}
    assert ids == {failed.webhook_id} and failed.webhook_id.startswith("msg_")
    assert hook.received[0]["payload"] == hook.received[1]["payload"]
    payload = hook.received[1]["payload"]
    assert payload["type"] == "job.succeeded" and payload["timestamp"]
    data = payload["data"]
    assert data["id"] == job_id and data["status"] == "succeeded" and data["error"] is None
    assert data["stage"] == "storing" and data["metrics"]["params_after"] > 0
    assert data["links"]["self"] == f"/v1/jobs/{job_id}"
    assert "stage_seconds" not in data["metrics"]  # a summary, not every metric

    # The delivery log, for the job's tenant only.
    listed = api.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=h).json()["items"]
    assert [(d["attempt"], d["state"], d["status_code"]) for d in listed] == [
        (1, "retrying", 500),
        (2, "succeeded", 200),
    ]
    assert secret not in json.dumps(listed)
    assert api.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=auth("other")).status_code == (
        404
    )


def test_subscribed_events_only_and_the_job_webhook_wins_over_the_default(
    api: TestClient, auth, local_settings: Settings, text_files, tmp_path: Path
) -> None:
    h = auth()
    model = save_tiny_llama(tmp_path / "tiny")
    r = api.put(
        "/v1/webhooks/default",
        json={"url": "http://127.0.0.1:9/default", "events": ["job.started", "job.failed"]},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["secret"].startswith("whsec_")
    own = submit(api, h, model, text_files, webhook={"url": "http://127.0.0.1:9/own"})
    default = submit(api, h, model, text_files)
    factory = api.app.state.session_factory
    sent: list[int] = []
    for job_id in (own, default):
        for event in ("job.started", "job.succeeded", "job.failed", "job.cancelled"):
            emit(
                settings=local_settings,
                session_factory=factory,
                job_id=job_id,
                event=event,
                send=sent.append,
            )
    assert [(d.event_type, d.url) for d in rows(api, own)] == [
        ("job.succeeded", "http://127.0.0.1:9/own"),
        ("job.failed", "http://127.0.0.1:9/own"),
        ("job.cancelled", "http://127.0.0.1:9/own"),
    ]
    assert [(d.event_type, d.url) for d in rows(api, default)] == [
        ("job.started", "http://127.0.0.1:9/default"),
        ("job.failed", "http://127.0.0.1:9/default"),
    ]
    assert len(sent) == 5
    # Without a default, a job without its own webhook sends nothing.
    assert api.delete("/v1/webhooks/default", headers=h).status_code == 204
    assert (
        emit(
            settings=local_settings,
            session_factory=factory,
            job_id=default,
            event="job.failed",
            send=sent.append,
        )
        == []
    )


def test_the_last_failed_attempt_gives_up_and_a_redelivered_message_sends_nothing(
    api: TestClient, auth, local_settings: Settings, text_files, tmp_path: Path
) -> None:
    h = auth()
    secret = new_secret(api, h)
    local_settings.webhook_retry_delays = [0.0, 0.0]
    model = save_tiny_llama(tmp_path / "tiny")
    factory = api.app.state.session_factory
    with receiver(secret, [503]) as hook:
        job_id = submit(api, h, model, text_files, webhook={"url": hook.url})
        (delivery_id,) = emit(
            settings=local_settings,
            session_factory=factory,
            job_id=job_id,
            event="job.cancelled",
            send=lambda _: None,
        )
        assert deliver_all(api, local_settings, delivery_id) == 3
        assert [d.state for d in rows(api, job_id)] == ["retrying", "retrying", "failed"]
        # The same message again (broker redelivery): nothing is sent twice.
        assert deliver(factory, local_settings, delivery_id) is None
        assert len(hook.received) == 3


def test_a_host_that_turned_private_is_refused_at_delivery_and_not_retried(
    api: TestClient, auth, local_settings: Settings, text_files, tmp_path: Path
) -> None:
    """DNS rebinding: the URL passed at submit, its address is private when it is sent."""
    h = auth()
    secret = new_secret(api, h)
    model = save_tiny_llama(tmp_path / "tiny")
    factory = api.app.state.session_factory
    with receiver(secret, [200]) as hook:
        job_id = submit(api, h, model, text_files, webhook={"url": hook.url})
        (delivery_id,) = emit(
            settings=local_settings,
            session_factory=factory,
            job_id=job_id,
            event="job.failed",
            send=lambda _: None,
        )
        strict = local_settings.model_copy(update={"webhook_allow_private_addresses": False})
        assert deliver(factory, strict, delivery_id) is None
        assert hook.received == []
    (row,) = rows(api, job_id)
    assert row.state == "failed" and "loopback" in (row.error or "")


def test_deliveries_connect_to_the_checked_address() -> None:
    import ipaddress

    url, headers, extensions = _pinned(
        "https://hooks.example.com:8443/x?y=1", [ipaddress.ip_address("93.184.215.14")]
    )
    assert url == "https://93.184.215.14:8443/x?y=1"
    assert headers == {"Host": "hooks.example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}
    url, headers, _ = _pinned("http://h.example/x", [ipaddress.ip_address("2606:2800::1")])
    assert url == "http://[2606:2800::1]/x" and headers == {"Host": "h.example"}
    assert _pinned("http://h.example/x", []) == ("http://h.example/x", {}, {})


def test_the_worker_registers_the_delivery_task(settings: Settings) -> None:
    from slimforge.worker.celery_app import make_celery

    app = make_celery(settings)
    assert DELIVER_WEBHOOK_TASK in app.tasks
