"""API keys: creation (shown once), hashing, authentication, scopes, listing and revocation."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from slimforge.app.auth.models import ApiKey, Tenant
from slimforge.app.db import utcnow
from slimforge.app.errors import NotFound, Unauthorized
from slimforge.contract.keys import ApiKeyOut
from slimforge.contract.scopes import (
    DEFAULT_SCOPES,
    SCOPES,
    Scope,
    effective_scopes,
    normalize_scopes,
)

KEY_PREFIX = "sf_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant every query is scoped to, and what its key may do."""

    tenant_id: str
    tenant_name: str
    key_id: str
    # Effective scopes (each granted scope with those below it); admin unless told otherwise.
    scopes: frozenset[Scope] = frozenset(SCOPES)

    def has_scope(self, scope: Scope) -> bool:
        return scope in self.scopes


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


def allows_remote_code(session: Session, *, tenant_id: str) -> bool:
    """Whether the tenant may submit models loaded with ``trust_remote_code``."""
    return bool(session.scalar(select(Tenant.allow_remote_code).where(Tenant.id == tenant_id)))


def set_remote_code(session: Session, *, tenant_name: str, allowed: bool) -> Tenant:
    """Allow (or forbid again) the tenant's models with their own code; the tenant is created
    if new. The caller commits."""
    tenant = get_or_create_tenant(session, name=tenant_name)
    tenant.allow_remote_code = allowed
    session.flush()
    return tenant


def _new_key(
    session: Session, *, tenant_id: str, scopes: Iterable[str] | None, name: str | None
) -> tuple[ApiKey, str]:
    granted = normalize_scopes(scopes) if scopes else []
    if name is not None and not 0 < len(name) <= 100:
        raise ValueError("a key's name has 1 to 100 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        tenant_id=tenant_id,
        prefix=key[:10],
        key_hash=hash_key(key),
        name=name,
        scopes=",".join(granted or DEFAULT_SCOPES),
    )
    session.add(row)
    session.flush()
    return row, key


def create_api_key(
    session: Session,
    *,
    tenant_name: str,
    scopes: Iterable[str] | None = None,
    name: str | None = None,
) -> str:
    """Create a key for the tenant (created if new) and return it; only its hash is stored.
    No scopes (or an empty list): an ``admin`` key. ``ValueError`` names an unknown scope."""
    tenant = get_or_create_tenant(session, name=tenant_name)
    return _new_key(session, tenant_id=tenant.id, scopes=scopes, name=name)[1]


def issue_key(
    session: Session, *, tenant_id: str, scopes: Iterable[str] | None, name: str | None
) -> tuple[ApiKey, str]:
    """A new key of this tenant, committed: the row and the key itself (shown once)."""
    row, key = _new_key(session, tenant_id=tenant_id, scopes=scopes, name=name)
    session.commit()
    return row, key


def list_keys(session: Session, *, tenant_id: str) -> list[ApiKey]:
    """The tenant's keys, revoked ones included, oldest first."""
    query = (
        select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return list(session.scalars(query))


def key_out(row: ApiKey) -> ApiKeyOut:
    """A key as listed: its granted scopes, never the key nor its hash."""
    granted = {s.strip() for s in row.scopes.split(",")}
    return ApiKeyOut(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=[s for s in SCOPES if s in granted],
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def revoke_key(session: Session, *, key_id: str, tenant_id: str | None) -> ApiKey:
    """Revoke a key (at once: the next request with it gets 401). ``tenant_id=None`` (the
    operator's CLI) reaches any tenant's key; another tenant's key is a 404. Revoking a revoked
    key changes nothing."""
    row = session.get(ApiKey, key_id)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFound(f"no API key with id '{key_id}' for this tenant")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row


# Built once (every request runs it): the columns a Principal needs, not whole ORM rows.
_KEY_LOOKUP = (
    select(ApiKey.id, ApiKey.scopes, Tenant.id, Tenant.name)
    .join(Tenant, Tenant.id == ApiKey.tenant_id)
    .where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
)


def key_is_live(session: Session, *, key: str) -> bool:
    """Whether ``key`` is an API key that is not revoked (the same look-up as
    :func:`authenticate`)."""
    return session.execute(_KEY_LOOKUP, {"key_hash": hash_key(key)}).first() is not None


def authenticate(session: Session, *, authorization: str | None) -> Principal:
    """Resolve an ``Authorization: Bearer <key>`` header to its tenant or raise 401."""
    if not authorization:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
    row = session.execute(_KEY_LOOKUP, {"key_hash": hash_key(key.strip())}).first()
    if row is None:
        raise Unauthorized(
            "invalid or revoked API key; create one with 'slimforge admin create-key --tenant NAME'"
        )
    key_id, scopes, tenant_id, tenant_name = row
    return Principal(
        tenant_id=tenant_id,
        tenant_name=tenant_name,
        key_id=key_id,
        scopes=effective_scopes(scopes),
    )
