"""Request and response bodies of the credentials routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HubCredentialIn", "HubCredentialOut"]


class HubCredentialIn(BaseModel):
    """A Hugging Face access token with write access to the repositories jobs push to."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(
        min_length=8,
        max_length=500,
        pattern=r"^\S+$",
        description="The token (e.g. 'hf_…'). Stored encrypted; never returned.",
    )


class HubCredentialOut(BaseModel):
    """Whether a token is set, and its last characters."""

    configured: bool
    token_hint: str | None = Field(default=None, description="'…' and the last 4 characters.")
    updated_at: datetime | None = None
