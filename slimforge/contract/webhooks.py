"""Request and response bodies of the webhook routes, and the ``webhook`` field of a job."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "TERMINAL_EVENTS",
    "DeliveryOut",
    "DeliveryPage",
    "Webhook",
    "WebhookDefaultOut",
    "WebhookEvent",
    "WebhookSecretOut",
]

WebhookEvent = Literal["job.started", "job.succeeded", "job.failed", "job.cancelled"]
TERMINAL_EVENTS: list[WebhookEvent] = ["job.succeeded", "job.failed", "job.cancelled"]


class Webhook(BaseModel):
    """Where to POST a job's events, and which ones."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2000,
        description="http(s) URL that receives the events. Private, loopback and link-local "
        "addresses are refused unless the operator allows them.",
    )
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(TERMINAL_EVENTS),
        min_length=1,
        description="Events to send; default: the terminal ones (succeeded, failed, cancelled).",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # Syntax only here; the address check needs the settings and DNS (the service does it).
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"the webhook URL must be http:// or https://, not '{value}'")
        if not parts.hostname:
            raise ValueError(f"the webhook URL '{value}' has no host")
        if parts.username or parts.password:
            raise ValueError("the webhook URL must not carry credentials (user:password@)")
        return value

    @field_validator("events")
    @classmethod
    def _unique(cls, value: list[WebhookEvent]) -> list[WebhookEvent]:
        return list(dict.fromkeys(value))


class WebhookDefaultOut(BaseModel):
    """The tenant's default webhook (used by jobs without their own)."""

    configured: bool
    url: str | None = None
    events: list[WebhookEvent] = Field(default_factory=list)
    secret_configured: bool = Field(description="Whether a signing secret exists.")
    secret: str | None = Field(
        default=None,
        description="The signing secret ('whsec_…'), only in the answer that created it.",
    )
    updated_at: datetime | None = None


class WebhookSecretOut(BaseModel):
    """A new signing secret: shown this once, stored encrypted, never returned again."""

    secret: str = Field(description="'whsec_' + base64; the decoded bytes are the HMAC key.")
    created_at: datetime


class DeliveryOut(BaseModel):
    """One attempt to deliver one event."""

    id: int
    job_id: str
    event_type: str
    webhook_id: str = Field(description="The webhook-id header: the same on every retry.")
    url: str
    attempt: int
    state: str = Field(
        description="pending (not tried yet), retrying (failed, another attempt follows), "
        "succeeded, or failed (the last attempt failed)."
    )
    status_code: int | None
    error: str | None
    duration_ms: int | None
    created_at: datetime
    scheduled_at: datetime | None
    sent_at: datetime | None
    finished_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
