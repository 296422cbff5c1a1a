"""The stored result of a job: where its files are and their manifest."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from slimforge.app.db import Base, UTCDateTime, utcnow


class Artifact(Base):
    __tablename__ = "artifacts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    # Location inside the artifact store (a folder name for the local store).
    location: Mapped[str] = mapped_column(String(500))
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    total_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
