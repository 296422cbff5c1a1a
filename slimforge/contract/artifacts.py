"""Artifact listings."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class ArtifactFileOut(BaseModel):
    path: str
    size: int
    sha256: str
    url: str


class ArtifactOut(BaseModel):
    job_id: str
    created_at: datetime
    total_size: int
    files: list[ArtifactFileOut]
