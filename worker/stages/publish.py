"""``publishing`` (when the job has ``output.hub_repo``): push the stored artifact to the Hub.

Every file is checked against the manifest's size and sha256 before anything is uploaded,
from either store. Publishing is not cancellable: the artifact is already stored, and a push
cannot be half taken back, so a cancel that arrives now is reported as too late (the runner).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from slimforge.app.artifacts.models import Artifact
from slimforge.app.artifacts.storage import ChecksumMismatch, LocalArtifactStore, make_store
from slimforge.app.credentials.service import get_hub_token
from slimforge.app.db import session_scope
from slimforge.app.jobs import lifecycle
from slimforge.worker.context import JobContext
from slimforge.worker.publish import PublishError, publish_artifact

__all__ = ["run", "verify_folder", "wanted"]


def wanted(ctx: JobContext) -> bool:
    """Whether to push: the job names a repository and no earlier attempt pushed already
    (a worker that died after the push does not push twice; said in an event)."""
    if ctx.hub_repo is None:
        return False
    if ctx.stored_metrics.get("hub"):
        ctx.reporter.event("already pushed to the Hub", data=ctx.stored_metrics["hub"])
        return False
    return True


def verify_folder(folder: Path, files: list[dict[str, Any]]) -> None:
    """Check that ``folder`` holds exactly the manifest's ``files`` (path, size in bytes,
    sha256); raises ChecksumMismatch naming the first file that differs."""
    listed = {entry["path"] for entry in files}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.relative_to(folder).as_posix() not in listed:
            raise ChecksumMismatch(f"artifact file '{path.name}' is not in the manifest")
    for entry in files:
        path = folder / entry["path"]
        if not path.is_file():
            raise ChecksumMismatch(f"artifact file '{entry['path']}' is missing from the store")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if path.stat().st_size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise ChecksumMismatch(f"artifact file '{entry['path']}' does not match its sha256")


def _read_token(ctx: JobContext) -> str:
    def read(_attempt: int) -> str | None:
        with session_scope(ctx.reporter.factory) as session:
            try:
                return get_hub_token(session, tenant_id=ctx.tenant_id, settings=ctx.settings)
            except ValueError as exc:  # a credential encrypted with another key
                raise PublishError(str(exc)) from None

    token = ctx.reporter.db_retry(read, what="hub token")
    if token is None:
        raise PublishError("no Hugging Face token is set: PUT /v1/credentials/hub")
    return token


def _checked_folder(ctx: JobContext) -> Path:
    """The stored artifact as a folder on this machine, every file checked."""

    def read_manifest(_attempt: int) -> tuple[str, list[dict[str, Any]]]:
        with session_scope(ctx.reporter.factory) as session:
            artifact = session.get(Artifact, ctx.job_id)
            assert artifact is not None  # stored before publishing
            return artifact.location, list(artifact.files)

    location, files = ctx.reporter.db_retry(read_manifest, what="artifact manifest")
    store = make_store(ctx.settings)
    if isinstance(store, LocalArtifactStore):  # pushed from where it lies
        folder = store.job_dir(location)
        verify_folder(folder, files)
        return folder
    folder = ctx.workdir / "publish"  # fetched (checking every sha256) to push from a folder
    shutil.rmtree(folder, ignore_errors=True)
    store.download(location, files, folder)
    return folder


def run(ctx: JobContext) -> None:
    output = ctx.request.output
    assert output is not None and output.hub_repo is not None  # see wanted()
    token = _read_token(ctx)
    folder = _checked_folder(ctx)
    method = ctx.request.method.name
    hub = publish_artifact(
        folder=folder,
        output=output.model_dump(),
        token=token,
        endpoint=ctx.settings.hub_endpoint,
        commit_message=output.commit_message or f"slimforge: {method} (job {ctx.job_id})",
        reporter=ctx.reporter,
        attempts=ctx.settings.publish_attempts,
        backoff=ctx.settings.publish_backoff_seconds,
    )

    def record_push(_attempt: int) -> None:
        with session_scope(ctx.reporter.factory) as session:  # safe to repeat: the same key
            lifecycle.merge_metrics(session, job_id=ctx.job_id, metrics={"hub": hub})

    ctx.reporter.db_retry(record_push, what="hub metrics")
