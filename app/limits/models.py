"""A tenant's own quotas, overriding the defaults from the settings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from slimforge.app.db import Base, UTCDateTime, utcnow

__all__ = ["TenantQuota"]


class TenantQuota(Base):
    """One row per tenant with its own limits. A NULL column means "the settings' default";
    0 means "unlimited" for this tenant."""

    __tablename__ = "tenant_quotas"

    tenant_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    concurrent_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    jobs_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_model_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
