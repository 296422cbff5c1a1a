"""API keys: creation (shown once), hashing and authentication."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import ApiKey, Tenant
from app.errors import Unauthorized

KEY_PREFIX = "sf_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant every query is scoped to."""

    tenant_id: str
    tenant_name: str
    key_id: str


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so a plain SHA-256 is enough (no password stretching).
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(session: Session, *, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(session: Session, *, tenant_name: str) -> str:
    """Create a key for the tenant (created if new) and return it; only its hash is stored."""
    tenant = get_or_create_tenant(session, name=tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, prefix=key[:10], key_hash=hash_key(key)))
    session.flush()
    return key


def authenticate(session: Session, *, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer <key>`` header to its tenant or raise 401."""
    if not authorization:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
    row = session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_key(key.strip()), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        raise Unauthorized(
            "invalid or revoked API key; create one with 'slimforge admin create-key --tenant NAME'"
        )
    api_key, tenant = row
    return Principal(tenant_id=tenant.id, tenant_name=tenant.name, key_id=api_key.id)
