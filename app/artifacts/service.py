"""Artifacts: recording what a job produced and finding its files for download."""

from __future__ import annotations

import logging
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

log = logging.getLogger("slimforge.api")

__all__ = [
    "artifact_out",
    "delete_job",
    "get_artifact",
    "purge_expired_artifacts",
    "purge_orphaned_artifacts",
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
    """Delete an ended job: the job, its events and manifest first, then its files.

    Rows first: a commit that fails leaves the job as it was, every file its manifest lists
    still there. Files that outlive their rows (the process died, or the store failed, right
    after the commit) are removed by :func:`purge_orphaned_artifacts`, which the workers'
    sweeper runs.
    """
    job = get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job.status not in TERMINAL_STATUSES:
        raise Conflict(
            f"job '{job_id}' is {job.status}: cancel it first (POST /v1/jobs/{job_id}/cancel)"
        )
    artifact = session.get(Artifact, job_id)
    # The job id also names the files an unrecorded attempt may have left.
    location = artifact.location if artifact is not None else job_id
    session.delete(job)
    session.commit()
    try:
        store.delete(location)
    except Exception:  # the rows are gone: the orphan sweep finishes the files
        log.warning("job %s deleted; its files stay until the next sweep", job_id, exc_info=True)


def purge_orphaned_artifacts(session: Session, *, store: ArtifactStore) -> list[str]:
    """Remove stored files whose job no longer exists (a deletion interrupted after its
    commit); returns those job ids. A job being stored still has its row, so it is never
    touched."""
    stored = store.job_ids()
    if not stored:
        return []
    existing = set(session.scalars(select(Job.id).where(Job.id.in_(stored))))
    orphans = sorted(stored - existing)
    for job_id in orphans:
        store.delete(job_id)
    return orphans


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
