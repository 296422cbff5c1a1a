"""Artifacts: recording what a job produced and finding its files for download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts.models import Artifact
from app.artifacts.schemas import ArtifactFileOut, ArtifactOut
from app.artifacts.storage import LocalArtifactStore
from app.errors import NotFound
from app.jobs.service import get_job

__all__ = ["artifact_out", "get_artifact", "record_artifact", "resolve_file"]


def record_artifact(
    session: Session, *, job_id: str, location: str, files: list[dict[str, Any]]
) -> Artifact:
    """Store (or replace, on a re-run) the manifest of a job's artifact."""
    artifact = session.get(Artifact, job_id)
    total = sum(int(f["size"]) for f in files)
    if artifact is None:
        artifact = Artifact(job_id=job_id, location=location, files=files, total_size=total)
        session.add(artifact)
    else:
        artifact.location, artifact.files, artifact.total_size = location, files, total
    session.flush()
    return artifact


def get_artifact(session: Session, *, tenant_id: str, job_id: str) -> Artifact:
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    artifact = session.scalar(select(Artifact).where(Artifact.job_id == job_id))
    if artifact is None:
        raise NotFound(f"job '{job_id}' has no artifact (status '{job.status}')")
    return artifact


def resolve_file(
    session: Session, *, store: LocalArtifactStore, tenant_id: str, job_id: str, path: str
) -> tuple[Path, dict[str, Any]]:
    """A file of the job's artifact; only names listed in the manifest are served."""
    artifact = get_artifact(session, tenant_id=tenant_id, job_id=job_id)
    entry = next((f for f in artifact.files if f["path"] == path), None)
    file_path = store.file_path(artifact.location, path) if entry is not None else None
    if entry is None or file_path is None:
        raise NotFound(f"job '{job_id}' has no artifact file '{path}'")
    return file_path, entry


def artifact_out(artifact: Artifact) -> ArtifactOut:
    base = f"/v1/jobs/{artifact.job_id}/artifacts"
    return ArtifactOut(
        job_id=artifact.job_id,
        created_at=artifact.created_at,
        total_size=artifact.total_size,
        files=[
            ArtifactFileOut(
                path=f["path"], size=f["size"], sha256=f["sha256"], url=f"{base}/{f['path']}"
            )
            for f in artifact.files
        ],
    )
