"""Webhook deliveries as plain functions; the Celery task (``slimforge.worker.tasks``) only
carries ids.

:func:`emit` turns a job event into a recorded delivery and queues it; :func:`deliver` makes
one signed attempt, records it, and says when to try again. Each attempt is a row of
``webhook_deliveries``; the retries of one event share its ``webhook-id`` and body, so a
receiver can drop duplicates.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from slimforge.app.db import session_scope, utcnow
from slimforge.app.jobs.models import Job
from slimforge.app.queue import DELIVER_WEBHOOK_TASK, enqueue_webhook, make_celery_app
from slimforge.app.settings import Settings
from slimforge.app.webhooks import service
from slimforge.app.webhooks.models import WebhookDelivery
from slimforge.app.webhooks.safety import (
    UnsafeWebhookUrl,
    WebhookHostUnresolvable,
    check_webhook_url,
)
from slimforge.contract.signing import sign_webhook
from slimforge.worker.db_retry import retry_db

__all__ = ["DELIVER_WEBHOOK_TASK", "NextAttempt", "deliver", "emit"]

log = logging.getLogger("slimforge.worker")

USER_AGENT = "slimforge-webhooks/0.1"


@dataclass(frozen=True)
class NextAttempt:
    """The attempt to send next (its row id) and in how many seconds."""

    delivery_id: int
    delay: float


def emit(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    job_id: str,
    event: str,
    send: Callable[[int], None] | None = None,
) -> list[int]:
    """Record and queue ``event`` for the job's webhook (or its tenant's default) if it
    subscribes to it; returns the delivery ids. Never raises: a webhook problem must not change
    the outcome of the job."""
    since = utcnow()

    def record(attempt: int) -> list[int]:
        with session_factory() as session:
            if attempt > 1:  # the try that lost its connection may have committed its row
                landed = session.scalars(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.job_id == job_id,
                        WebhookDelivery.event_type == event,
                        WebhookDelivery.attempt == 1,
                        WebhookDelivery.created_at >= since,
                    )
                ).all()
                if landed:
                    return list(landed)
            return service.create_deliveries(session, job_id=job_id, event=event)

    try:
        # Through a short database outage too: a job that rode it out still sends its event.
        ids = retry_db(
            record, what=f"job {job_id}: {event} webhook", seconds=settings.db_retry_seconds
        )
        if not ids:
            return ids
        if send is not None:
            for delivery_id in ids:
                send(delivery_id)
            return ids
        # A producer just for this: a job sends a few events in all, and no client outlives
        # the call (the runner has no Celery app of its own).
        producer = make_celery_app(settings)
        try:
            for delivery_id in ids:
                enqueue_webhook(producer, settings, delivery_id)
        finally:
            producer.close()
        return ids
    except Exception:
        log.exception("job %s: could not queue the %s webhook", job_id, event)
        return []


def _pinned(url: str, addresses: list[Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL rewritten to the checked address, with the Host header and TLS name of the
    original: the connection goes where the check looked, whatever DNS answers next."""
    if not addresses:
        return url, {}, {}
    parts = urlsplit(url)
    host = parts.hostname or ""
    ip = addresses[0]
    shown = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
    netloc = shown + (f":{parts.port}" if parts.port else "")
    host_header = host + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": host_header}, extensions


def _send(
    client: httpx.Client, url: str, body: str, headers: dict[str, str], settings: Settings
) -> int:
    """POST once; the status code. Raises UnsafeWebhookUrl or httpx errors."""
    addresses = check_webhook_url(url, allow_private=settings.webhook_allow_private_addresses)
    target, extra_headers, extensions = _pinned(url, addresses)
    response = client.post(
        target,
        content=body.encode(),
        headers={**headers, **extra_headers},
        extensions=extensions,
        timeout=settings.webhook_timeout_seconds,
    )
    return response.status_code


def _pending(
    session_factory: sessionmaker[Session], settings: Settings, delivery_id: int
) -> tuple[str, str, str, str | None] | None:
    """(url, body, webhook id, signing secret or None) of a pending delivery; None when it is
    not pending (a redelivered message: already handled)."""
    with session_factory() as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None or row.state != "pending":
            return None
        tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == row.job_id))
        secret = None
        if tenant_id is not None:
            try:
                secret = service.get_secret(session, tenant_id=tenant_id, settings=settings)
            except ValueError as exc:  # encrypted with another key
                log.error("webhook %s: %s", row.webhook_id, exc)
        return row.url, row.payload, row.webhook_id, secret


def _post(
    url: str,
    body: str,
    msg_id: str,
    secret: str,
    settings: Settings,
    http_client: httpx.Client | None,
) -> tuple[int | None, str | None, bool]:
    """Send one signed attempt: (HTTP status or None, error or None, whether to retry)."""
    status_code: int | None = None
    error: str | None = None
    retryable = True
    timestamp = int(time.time())  # per attempt: receivers reject stale timestamps
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(secret, msg_id, timestamp, body),
    }
    client = http_client or httpx.Client(follow_redirects=False, trust_env=False)
    try:
        status_code = _send(client, url, body, headers, settings)
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except WebhookHostUnresolvable as exc:
        error = str(exc)
    except UnsafeWebhookUrl as exc:  # DNS now points somewhere private: never retried
        error, retryable = str(exc), False
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
    finally:
        if http_client is None:
            client.close()
    return status_code, error, retryable


def deliver(
    session_factory: sessionmaker[Session],
    settings: Settings,
    delivery_id: int,
    *,
    http_client: httpx.Client | None = None,
) -> NextAttempt | None:
    """Make one attempt of a pending delivery and record it; returns the next attempt to
    schedule, or None when done (delivered, out of attempts, or nothing to do)."""
    pending = _pending(session_factory, settings, delivery_id)
    if pending is None:
        return None
    url, body, msg_id, secret = pending
    started = time.monotonic()
    sent_at = utcnow()
    if secret is None:
        status_code: int | None = None
        error: str | None = "no signing secret: create one with POST /v1/webhooks/secret"
        retryable = False
    else:
        status_code, error, retryable = _post(url, body, msg_id, secret, settings, http_client)
    duration_ms = int((time.monotonic() - started) * 1000)

    with session_scope(session_factory) as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None:  # the job was deleted meanwhile
            return None
        row.status_code, row.error, row.duration_ms = status_code, error, duration_ms
        row.sent_at, row.finished_at = sent_at, utcnow()
        return _next_attempt(session, row, settings, error=error, retryable=retryable)


def _next_attempt(
    session: Session,
    row: WebhookDelivery,
    settings: Settings,
    *,
    error: str | None,
    retryable: bool,
) -> NextAttempt | None:
    """Close the attempt ``row`` (succeeded, failed, or retrying with a new pending row)."""
    delays = settings.webhook_retry_delays
    msg_id = row.webhook_id
    if error is None:
        row.state = "succeeded"
        return None
    if not retryable or row.attempt > len(delays):
        row.state = "failed"
        log.warning("webhook %s: attempt %d failed, giving up: %s", msg_id, row.attempt, error)
        return None
    row.state = "retrying"
    delay = delays[row.attempt - 1]
    retry = WebhookDelivery(
        job_id=row.job_id,
        event_type=row.event_type,
        webhook_id=msg_id,
        url=row.url,
        attempt=row.attempt + 1,
        state="pending",
        payload=row.payload,
        scheduled_at=utcnow() + timedelta(seconds=delay),
    )
    session.add(retry)
    session.flush()
    log.info("webhook %s: attempt %d failed (%s); retry in %s s", msg_id, row.attempt, error, delay)
    return NextAttempt(delivery_id=retry.id, delay=delay)
