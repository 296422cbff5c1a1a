"""A tenant's Hugging Face Hub token, encrypted (never stored or returned in clear)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from slimforge.app.db import Base, UTCDateTime, utcnow


class HubCredential(Base):
    __tablename__ = "hub_credentials"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    token_encrypted: Mapped[str] = mapped_column(Text)
    # The last four characters, so a user can tell which token is set without seeing it.
    token_hint: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
