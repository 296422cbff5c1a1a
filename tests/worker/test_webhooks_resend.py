"""Webhook attempts whose broker message was lost (never sent, or gone from Redis) are sent
again by the sweeper and delivered; attempts not yet overdue are left alone. Real PostgreSQL
and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bench.services import fresh_database
from slimforge.app.db import session_scope, utcnow
from slimforge.app.main import create_app
from slimforge.app.migrate import upgrade
from slimforge.app.queue import make_celery_app
from slimforge.app.settings import Settings
from slimforge.app.webhooks.models import WebhookDelivery
from slimforge.worker.recovery import OrphanSweeper, resend_stale_webhooks
from slimforge.worker.webhooks import DELIVER_WEBHOOK_TASK, deliver, emit
from tests.conftest import make_key
from tests.worker.test_webhooks_delivery import new_secret, receiver

pytestmark = pytest.mark.services


@pytest.fixture
def pg_settings(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[Settings]:
    broker = redis_url.rsplit("/", 1)[0] + "/8"  # a database of its own, emptied here
    redis.Redis.from_url(broker).flushdb()
    yield Settings(
        home=tmp_path / "home",
        database_url=fresh_database(postgres_url, "webhook_resend"),
        broker_url=broker,
        local_roots=[tmp_path],
        webhook_allow_private_addresses=True,  # the receiver is on loopback
        webhook_queue="webhooks",
        webhook_resend_after_seconds=300,
    )


def queued_deliveries(settings: Settings) -> list[int]:
    """Take every message off the webhook queue (as a worker would); their delivery ids."""
    celery = make_celery_app(settings)
    ids: list[int] = []
    try:
        with celery.connection_for_read() as conn:
            queue = conn.SimpleQueue(settings.webhook_queue)
            while True:
                try:
                    message = queue.get(timeout=0.2)
                except queue.Empty:
                    break
                assert message.headers["task"] == DELIVER_WEBHOOK_TASK
                args, _kwargs, _embed = message.payload
                ids.append(int(args[0]))
                message.ack()
            queue.close()
    finally:
        celery.close()
    return ids


def age(factory: sessionmaker[Session], delivery_id: int, **values: object) -> None:
    """Set the attempt's timestamps, as if it had been recorded (or resent) earlier."""
    with session_scope(factory) as session:
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(values)
        )


def test_attempts_whose_message_was_lost_are_sent_again_and_delivered(
    pg_settings: Settings, text_files: dict[str, Path]
) -> None:
    settings = pg_settings
    upgrade(settings)
    app = create_app(settings)
    factory = app.state.session_factory
    h = {"Authorization": f"Bearer {make_key(settings, 'acme')}"}
    with TestClient(app) as api, receiver(new_secret(api, h), [200]) as hook:
        body = {
            "model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            "target": {"ratio": 0.8},
            "method": {"name": "svd"},
            "calibration": {"path": str(text_files["calibration"])},
            "webhook": {"url": hook.url},
        }
        r = api.post("/v1/jobs", json=body, headers=h)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        def attempt(event: str, *, sent: bool) -> int:
            send = None if sent else (lambda _: None)  # None: a real message to Redis
            kw = {"settings": settings, "session_factory": factory, "job_id": job_id}
            (delivery_id,) = emit(**kw, event=event, send=send)
            return delivery_id

        flushed = attempt("job.failed", sent=True)
        broker = redis.Redis.from_url(settings.broker_url)
        assert broker.llen(settings.webhook_queue) == 1  # its message was on the queue ...
        broker.flushdb()  # ... and Redis lost it (a restart without persistence)
        broker.close()
        never_sent = attempt("job.succeeded", sent=False)
        just_due = attempt("job.cancelled", sent=False)
        later = attempt("job.cancelled", sent=False)
        resent_lately = attempt("job.cancelled", sent=False)
        now = utcnow()
        hour_ago = now - timedelta(hours=1)
        for overdue in (flushed, never_sent):  # due an hour ago
            age(factory, overdue, created_at=hour_ago, scheduled_at=hour_ago)
        # A retry waiting for its backoff; one resent 400 s ago, pending for an hour: the
        # wait doubles, so it is not due for another resend yet.
        age(factory, later, scheduled_at=now + timedelta(minutes=10))
        age(factory, resent_lately, created_at=hour_ago, scheduled_at=now - timedelta(seconds=400))

        celery = make_celery_app(settings)
        sweep = {"settings": settings, "session_factory": factory, "celery": celery}
        assert resend_stale_webhooks(**sweep) == [flushed, never_sent]
        assert resend_stale_webhooks(**sweep) == []  # just sent: not again at once
        assert sorted(queued_deliveries(settings)) == [flushed, never_sent]
        for delivery_id in (flushed, never_sent):  # what the worker's task does
            assert deliver(factory, settings, delivery_id) is None
        assert deliver(factory, settings, flushed) is None  # a duplicate: nothing sent
        assert len(hook.received) == 2
        assert {r["payload"]["type"] for r in hook.received} == {"job.failed", "job.succeeded"}
        assert all(r["verified"] for r in hook.received)

        with factory() as session:
            query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
            states = {row.id: row.state for row in session.scalars(query)}
        assert states[flushed] == states[never_sent] == "succeeded"
        for untouched in (just_due, later, resent_lately):
            assert states[untouched] == "pending"

        # The worker's sweeper thread runs this sweep too.
        age(factory, just_due, created_at=hour_ago, scheduled_at=hour_ago)
        sweeper = OrphanSweeper(**sweep, interval=3600)
        sweeper.start()
        sweeper.stop()
        sweeper.join(timeout=30)
        assert not sweeper.is_alive()
        assert queued_deliveries(settings) == [just_due]
        celery.close()
    app.state.engine.dispose()
