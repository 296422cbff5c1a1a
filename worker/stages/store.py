"""``storing``: the exported folder into the artifact store (local folder or S3), then its
manifest and the job's metrics in one commit."""

from __future__ import annotations

from slimforge.app.artifacts.service import record_artifact
from slimforge.app.artifacts.storage import make_store
from slimforge.app.db import session_scope
from slimforge.app.jobs import lifecycle
from slimforge.worker.context import JobContext

__all__ = ["run", "store_artifact"]


def store_artifact(ctx: JobContext, *, stage: str = "storing") -> None:
    """Put ``workdir/artifact`` (the files ``ctx.files``) into the store, then record its
    manifest with the job's metrics, ``stage`` timed among them (exporting also stores what it
    wrote before an output format failed)."""
    assert ctx.memory is not None  # the runner's
    location = make_store(ctx.settings).put_folder(ctx.job_id, ctx.workdir / "artifact")
    ctx.metrics.update(ctx.memory.snapshot())
    files = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in ctx.files]

    def store_manifest(_attempt: int) -> None:
        # Safe to repeat: record_artifact replaces the manifest, merge_metrics the same keys.
        with session_scope(ctx.reporter.factory) as session:
            record_artifact(session, job_id=ctx.job_id, location=location, files=files)
            # The stored metrics carry this stage's time too, so it is taken here (the
            # runner's loop writes the same key again when the stage returns).
            ctx.timings[stage] = ctx.stage_seconds()
            # One commit with the manifest: a stored artifact always has its metrics, and a
            # restarted job that finds it goes straight to publishing.
            lifecycle.merge_metrics(session, job_id=ctx.job_id, metrics=ctx.metrics)

    ctx.reporter.db_retry(store_manifest, what="artifact manifest")


def run(ctx: JobContext) -> None:
    store_artifact(ctx)
