"""Request and response bodies of the API key routes. No answer ever carries a key's hash, and
only the creation answer carries the key itself."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slimforge.contract.scopes import DEFAULT_SCOPES, Scope, normalize_scopes

__all__ = ["ApiKeyCreate", "ApiKeyCreated", "ApiKeyList", "ApiKeyOut"]


class ApiKeyCreate(BaseModel):
    """A new key of the caller's tenant."""

    model_config = ConfigDict(extra="forbid")

    scopes: list[Scope] = Field(
        default_factory=lambda: list(DEFAULT_SCOPES),
        max_length=3,
        description="'read' (GET routes), 'submit' (also create, cancel, publish and delete "
        "jobs) or 'admin' (also credentials, webhook settings and keys); each includes the "
        "ones before it. Omitted or empty: admin.",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="A label to tell keys apart ('ci', 'dashboard').",
    )

    @field_validator("scopes")
    @classmethod
    def _canonical(cls, scopes: list[Scope]) -> list[Scope]:
        return normalize_scopes(scopes) or list(DEFAULT_SCOPES)


class ApiKeyOut(BaseModel):
    """A key as listed: never the key nor its hash."""

    id: str
    name: str | None = None
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    scopes: list[Scope] = Field(description="The granted scopes (each includes those before it).")
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    """A new key: ``key`` is shown in this answer only (only its SHA-256 hash is stored)."""

    key: str = Field(description="The API key ('sf_…'): store it now, it is never shown again.")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]
