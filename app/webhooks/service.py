"""Webhook defaults, signing secrets, job events turned into deliveries, and the delivery log.

Keyword-only functions that take the session; the routers and the worker share them. The
sending itself (HTTP, retries) is the worker's (``slimforge.worker.webhooks``).
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from slimforge.app.credentials.crypto import SecretBox
from slimforge.app.db import utcnow
from slimforge.app.errors import NotFound, UnprocessableInput
from slimforge.app.jobs.models import Job
from slimforge.app.settings import Settings
from slimforge.app.webhooks.models import WebhookConfig, WebhookDelivery
from slimforge.app.webhooks.safety import UnsafeWebhookUrl, check_webhook_url
from slimforge.contract.webhooks import (
    DeliveryOut,
    Webhook,
    WebhookDefaultOut,
    WebhookSecretOut,
)

__all__ = [
    "check_job_webhook",
    "create_deliveries",
    "delete_default",
    "delivery_out",
    "event_payload",
    "get_default",
    "get_secret",
    "list_deliveries",
    "rotate_secret",
    "set_default",
]

SECRET_PREFIX = "whsec_"  # as slimforge.contract.signing expects; the API does not import the SDK

# The metrics a receiver most likely wants; the full set is at GET /v1/jobs/{id}.
_SUMMARY_METRICS = (
    "params_before",
    "params_after",
    "target_params",
    "achieved_ratio",
    "teacher_perplexity",
    "student_perplexity",
    "perplexity_ratio",
    "artifact_bytes",
    "hub",
)

_NO_SECRET = (
    "webhooks are signed with the tenant's secret and none exists yet: create one with "
    "POST /v1/webhooks/secret (or PUT /v1/webhooks/default)"
)


def _new_secret() -> str:
    # 32 random bytes; the Standard Webhooks spec asks for 24 to 64.
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _check_url(url: str, settings: Settings, field: str) -> None:
    try:
        check_webhook_url(url, allow_private=settings.webhook_allow_private_addresses)
    except UnsafeWebhookUrl as exc:
        raise UnprocessableInput(f"{field}: {exc}", details={"field": field}) from None


def _config(session: Session, tenant_id: str) -> WebhookConfig:
    row = session.get(WebhookConfig, tenant_id)
    if row is None:
        row = WebhookConfig(tenant_id=tenant_id, events=[])
        session.add(row)
    return row


def _default_out(row: WebhookConfig | None, secret: str | None = None) -> WebhookDefaultOut:
    if row is None:
        return WebhookDefaultOut(configured=False, secret_configured=False)
    return WebhookDefaultOut(
        configured=row.url is not None,
        url=row.url,
        events=list(row.events or []) if row.url is not None else [],  # type: ignore[arg-type]
        secret_configured=row.secret_encrypted is not None,
        secret=secret,
        updated_at=row.updated_at,
    )


def get_default(session: Session, *, tenant_id: str) -> WebhookDefaultOut:
    """The tenant's default webhook and whether a secret exists (never the secret)."""
    return _default_out(session.get(WebhookConfig, tenant_id))


def set_default(
    session: Session, *, tenant_id: str, webhook: Webhook, settings: Settings
) -> WebhookDefaultOut:
    """Set the default webhook; creates the signing secret (returned this once) if none."""
    _check_url(webhook.url, settings, "url")
    row = _config(session, tenant_id)
    row.url, row.events, row.updated_at = webhook.url, list(webhook.events), utcnow()
    secret = None
    if row.secret_encrypted is None:
        secret = _new_secret()
        row.secret_encrypted = SecretBox(settings).encrypt(secret)
        row.secret_created_at = utcnow()
    session.commit()
    return _default_out(row, secret)


def delete_default(session: Session, *, tenant_id: str) -> bool:
    """Remove the default webhook (the secret stays); False when none was set."""
    row = session.get(WebhookConfig, tenant_id)
    if row is None or row.url is None:
        return False
    row.url, row.events, row.updated_at = None, [], utcnow()
    session.commit()
    return True


def rotate_secret(session: Session, *, tenant_id: str, settings: Settings) -> WebhookSecretOut:
    """Create or replace the signing secret; the only time it is returned."""
    row = _config(session, tenant_id)
    secret = _new_secret()
    row.secret_encrypted = SecretBox(settings).encrypt(secret)
    row.secret_created_at = row.updated_at = utcnow()
    session.commit()
    return WebhookSecretOut(secret=secret, created_at=row.secret_created_at)


def get_secret(session: Session, *, tenant_id: str, settings: Settings) -> str | None:
    """The tenant's secret in clear, for signing (None when none exists)."""
    row = session.get(WebhookConfig, tenant_id)
    if row is None or row.secret_encrypted is None:
        return None
    return SecretBox(settings).decrypt(row.secret_encrypted)


def check_job_webhook(
    session: Session, *, tenant_id: str, webhook: Webhook, settings: Settings
) -> None:
    """Refuse (422) a job's webhook whose URL is unsafe, or when no secret could sign it."""
    _check_url(webhook.url, settings, "webhook.url")
    row = session.get(WebhookConfig, tenant_id)
    if row is None or row.secret_encrypted is None:
        raise UnprocessableInput(f"webhook: {_NO_SECRET}", details={"field": "webhook"})


def event_payload(job: Job, event: str) -> dict[str, Any]:
    """The JSON body of ``event`` for ``job`` (its state now)."""
    base = f"/v1/jobs/{job.id}"
    metrics = job.metrics or {}
    return {
        "type": event,
        "timestamp": utcnow().isoformat(),
        "data": {
            "id": job.id,
            "status": job.status,
            "stage": job.stage,
            "method": job.method,
            "error": job.error,
            "metrics": {k: metrics[k] for k in _SUMMARY_METRICS if k in metrics},
            "metadata": job.metadata_ or {},
            "links": {
                "self": base,
                "events": f"{base}/events",
                "artifacts": f"{base}/artifacts",
                "webhook_deliveries": f"{base}/webhook-deliveries",
            },
        },
    }


def create_deliveries(session: Session, *, job_id: str, event: str) -> list[int]:
    """Record the first delivery attempt of ``event`` when the job (or, without its own
    webhook, its tenant's default) subscribes to it; returns the ids to send. Commits."""
    job = session.scalar(select(Job).where(Job.id == job_id))
    if job is None:
        return []
    hook = (job.spec or {}).get("webhook")
    if hook is None:  # the job's own webhook wins; the default applies only without one
        row = session.get(WebhookConfig, job.tenant_id)
        hook = {"url": row.url, "events": row.events} if row and row.url else None
    if hook is None or event not in hook.get("events", []):
        return []
    delivery = WebhookDelivery(
        job_id=job.id,
        event_type=event,
        webhook_id="msg_" + uuid.uuid4().hex,
        url=hook["url"],
        attempt=1,
        state="pending",
        payload=json.dumps(event_payload(job, event), separators=(",", ":")),
        scheduled_at=utcnow(),
    )
    session.add(delivery)
    session.commit()
    return [delivery.id]


def list_deliveries(session: Session, *, tenant_id: str, job_id: str) -> list[WebhookDelivery]:
    """Every attempt for the tenant's job, oldest first; 404 for other tenants' jobs."""
    found = session.scalar(select(Job.id).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if found is None:
        raise NotFound(f"no job '{job_id}'")
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job_id)
            .order_by(WebhookDelivery.id)
        )
    )


def delivery_out(row: WebhookDelivery) -> DeliveryOut:
    """One attempt as the API shows it (the body and the secret are not part of it)."""
    return DeliveryOut(
        id=row.id,
        job_id=row.job_id,
        event_type=row.event_type,
        webhook_id=row.webhook_id,
        url=row.url,
        attempt=row.attempt,
        state=row.state,
        status_code=row.status_code,
        error=row.error,
        duration_ms=row.duration_ms,
        created_at=row.created_at,
        scheduled_at=row.scheduled_at,
        sent_at=row.sent_at,
        finished_at=row.finished_at,
    )
