"""Jobs of dead workers: requeued once their lease expires, then resumed by a live worker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update

from bench.tiny import save_tiny_llama
from slimforge.app.db import utcnow
from slimforge.app.jobs.lifecycle import claim_job
from slimforge.app.jobs.models import Job
from slimforge.app.queue import make_celery_app
from slimforge.app.settings import Settings
from slimforge.worker.recovery import OrphanSweeper, requeue_orphaned_jobs
from slimforge.worker.runner import run_job
from tests.worker.test_runner import submit


def test_orphans_are_requeued_once_and_then_run(
    api: TestClient, auth, settings: Settings, tmp_path: Path, text_files
) -> None:
    h = auth()
    model = save_tiny_llama(tmp_path / "tiny")
    orphan = submit(api, h, model, text_files)
    alive = submit(api, h, model, text_files)
    factory = api.app.state.session_factory
    with factory() as session:
        assert claim_job(session, job_id=orphan, owner="dead:1", lease_seconds=600)
        assert claim_job(session, job_id=alive, owner="alive:2", lease_seconds=600)
        # The dead worker stopped renewing: its lease is in the past.
        session.execute(
            update(Job)
            .where(Job.id == orphan)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    settings.ensure_dirs()
    celery = make_celery_app(settings)
    queue = settings.broker_folder / "queue"
    before = len(list(queue.iterdir()))
    assert requeue_orphaned_jobs(settings=settings, session_factory=factory, celery=celery) == [
        orphan
    ]
    assert len(list(queue.iterdir())) == before + 1  # one new message, for the orphan only
    # A second sweep finds nothing: the job is queued again, not running.
    assert requeue_orphaned_jobs(settings=settings, session_factory=factory, celery=celery) == []
    job = api.get(f"/v1/jobs/{orphan}", headers=h).json()
    assert job["status"] == "queued" and job["attempts"] == 1
    events = [e["message"] for e in api.get(f"/v1/jobs/{orphan}/events", headers=h).json()["items"]]
    assert "worker lost (lease expired); job requeued and will resume" in events
    # The live worker's job is untouched; the orphan now runs to the end.
    assert api.get(f"/v1/jobs/{alive}", headers=h).json()["status"] == "running"
    assert run_job(settings=settings, session_factory=factory, job_id=orphan) == "succeeded"
    assert api.get(f"/v1/jobs/{orphan}", headers=h).json()["attempts"] == 2


def test_sweeper_thread_sweeps_at_start_and_stops(api: TestClient, settings: Settings) -> None:
    settings.ensure_dirs()
    calls: list[int] = []

    class Counting(OrphanSweeper):
        def run(self) -> None:
            calls.append(1)
            super().run()

    sweeper = Counting(
        settings=settings,
        session_factory=api.app.state.session_factory,
        celery=make_celery_app(settings),
        interval=0.05,
    )
    sweeper.start()
    sweeper.stop()
    sweeper.join(timeout=5)
    assert not sweeper.is_alive() and calls == [1]


def test_jobs_queued_with_nothing_happening_get_their_message_again(
    api: TestClient, auth, settings: Settings, tmp_path: Path, text_files
) -> None:
    """A broker restarted without persistence loses queued messages: the sweeper sends
    another once a queued job has been quiet for resend_queued_after_seconds, then waits
    that long again; the job still runs once."""
    from slimforge.app.db import session_scope
    from slimforge.app.jobs.models import JobEvent
    from slimforge.worker.recovery import resend_stale_queued

    h = auth()
    model = save_tiny_llama(tmp_path / "tiny")
    quiet, fresh = submit(api, h, model, text_files), submit(api, h, model, text_files)
    factory = api.app.state.session_factory
    with session_scope(factory) as session:  # the first job has been quiet for an hour
        hour_ago = utcnow() - timedelta(hours=1)
        session.execute(update(Job).where(Job.id == quiet).values(created_at=hour_ago))
        session.execute(
            update(JobEvent).where(JobEvent.job_id == quiet).values(created_at=hour_ago)
        )
    settings.ensure_dirs()
    celery = make_celery_app(settings)
    queue = settings.broker_folder / "queue"
    before = len(list(queue.iterdir()))
    sweep = {"settings": settings, "session_factory": factory, "celery": celery}
    assert resend_stale_queued(**sweep) == [quiet]
    assert len(list(queue.iterdir())) == before + 1
    assert resend_stale_queued(**sweep) == []  # just sent: quiet again only after a while
    events = [e["message"] for e in api.get(f"/v1/jobs/{quiet}/events", headers=h).json()["items"]]
    assert "still queued with no worker on it: its message was sent again" in events
    # Two messages, one run: the second finds the job already done.
    assert run_job(settings=settings, session_factory=factory, job_id=quiet) == "succeeded"
    assert run_job(settings=settings, session_factory=factory, job_id=quiet) is None
    assert api.get(f"/v1/jobs/{quiet}", headers=h).json()["attempts"] == 1
    assert api.get(f"/v1/jobs/{fresh}", headers=h).json()["status"] == "queued"
