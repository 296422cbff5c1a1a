"""Tenants and their API keys (stored as SHA-256 hashes, never in clear), with their scopes."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, false
from sqlalchemy.orm import Mapped, mapped_column

from slimforge.app.db import Base, UTCDateTime, utcnow


def _uuid() -> str:
    return uuid.uuid4().hex


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Input models loaded with trust_remote_code run their own Python on the workers: only for
    # tenants an operator allowed (``slimforge admin allow-remote-code``).
    allow_remote_code: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # The key's first characters, shown in listings so a user can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # An optional label ("ci", "dashboard") shown in listings.
    name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # The granted scopes, comma-separated in rank order ("read", "read,submit", "admin"); each
    # implies the lower ones (see ``slimforge.contract.scopes``).
    # Keys from before scopes existed: admin.
    scopes: Mapped[str] = mapped_column(String(100), default="admin", server_default="admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
