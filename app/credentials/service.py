"""Set, remove and read tenants' Hub tokens. Keyword-only functions that take the session."""

from __future__ import annotations

from sqlalchemy.orm import Session

from slimforge.app.credentials.crypto import SecretBox
from slimforge.app.credentials.models import HubCredential
from slimforge.app.db import utcnow
from slimforge.app.settings import Settings
from slimforge.contract.credentials import HubCredentialOut

__all__ = ["delete_hub_token", "describe_hub_token", "get_hub_token", "set_hub_token"]


def set_hub_token(
    session: Session, *, tenant_id: str, token: str, settings: Settings
) -> HubCredentialOut:
    """Store (or replace) the tenant's token, encrypted."""
    row = session.get(HubCredential, tenant_id)
    encrypted = SecretBox(settings).encrypt(token)
    hint = "…" + token[-4:]
    if row is None:
        row = HubCredential(tenant_id=tenant_id, token_encrypted=encrypted, token_hint=hint)
        session.add(row)
    else:
        row.token_encrypted, row.token_hint, row.updated_at = encrypted, hint, utcnow()
    session.commit()
    return HubCredentialOut(configured=True, token_hint=hint, updated_at=row.updated_at)


def describe_hub_token(session: Session, *, tenant_id: str) -> HubCredentialOut:
    row = session.get(HubCredential, tenant_id)
    if row is None:
        return HubCredentialOut(configured=False)
    return HubCredentialOut(configured=True, token_hint=row.token_hint, updated_at=row.updated_at)


def delete_hub_token(session: Session, *, tenant_id: str) -> bool:
    """Remove the tenant's token; False when none was set."""
    row = session.get(HubCredential, tenant_id)
    if row is None:
        return False
    session.delete(row)
    session.commit()
    return True


def get_hub_token(session: Session, *, tenant_id: str, settings: Settings) -> str | None:
    """The tenant's token in clear, for the worker's push (None when none is set)."""
    row = session.get(HubCredential, tenant_id)
    return None if row is None else SecretBox(settings).decrypt(row.token_encrypted)
