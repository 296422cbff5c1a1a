"""Artifacts: recording what a job produced and finding its files for download."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from slimforge.app.artifacts.models import Artifact
from slimforge.app.artifacts.storage import ArtifactStore
from slimforge.app.db import utcnow
from slimforge.app.errors import Conflict, NotFound
from slimforge.app.jobs.models import Job
from slimforge.app.jobs.service import add_event, get_job
from slimforge.contract.artifacts import ArtifactFileOut, ArtifactOut
from slimforge.contract.jobs import TERMINAL_STATUSES

__all__ = [
    "artifact_out",
    "delete_job",
    "get_artifact",
    "purge_expired_artifacts",
    "record_artifact",
    "resolve_file",
]


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
    session: Session, *, tenant_id: str, job_id: str, path: str
) -> tuple[Artifact, dict[str, Any]]:
    """(the artifact, the manifest entry) of one file; only names in the manifest exist."""
    artifact = get_artifact(session, tenant_id=tenant_id, job_id=job_id)
    entry = next((f for f in artifact.files if f["path"] == path), None)
    if entry is None:
        raise NotFound(f"job '{job_id}' has no artifact file '{path}'")
    return artifact, entry


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


def delete_job(session: Session, *, store: ArtifactStore, tenant_id: str, job_id: str) -> None:
    """Delete an ended job: its artifact files first, then the job, its events and manifest."""
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job.status not in TERMINAL_STATUSES:
        raise Conflict(
            f"job '{job_id}' is {job.status}: cancel it first (POST /v1/jobs/{job_id}/cancel)"
        )
    artifact = session.get(Artifact, job_id)
    if artifact is not None:
        store.delete(artifact.location)
    session.delete(job)
    session.commit()


def purge_expired_artifacts(
    session: Session, *, store: ArtifactStore, retention_days: float
) -> list[str]:
    """Remove the artifacts of jobs that ended more than ``retention_days`` ago (the jobs and
    their metrics stay, with an event saying so); returns their job ids."""
    cutoff = utcnow() - timedelta(days=retention_days)
    rows = session.execute(
        select(Artifact, Job)
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.finished_at.is_not(None), Job.finished_at < cutoff)
    ).all()
    purged = []
    for artifact, job in rows:
        store.delete(artifact.location)
        session.delete(artifact)
        add_event(
            session,
            job_id=job.id,
            stage=job.stage,
            message=f"artifact deleted: kept {retention_days:g} days after the job ended",
        )
        purged.append(job.id)
    session.commit()
    return purged
