"""Celery tasks: transport only. The message carries a job id; ``runner.run_job`` does the work.

``run_job`` is idempotent thanks to the job lease, which is what makes ``acks_late`` safe: a
message redelivered after a worker crash, or twice by the broker, never runs a job twice.
``deliver_webhook`` carries a delivery id; ``webhooks.deliver`` sends it once and the task
queues the next attempt, if any, with its backoff as the countdown.
"""

from __future__ import annotations

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from slimforge.app.queue import RUN_JOB_TASK, enqueue_webhook
from slimforge.app.settings import Settings
from slimforge.worker import runner, webhooks


def register_tasks(
    app: Celery, *, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    @app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_job(job_id: str) -> str | None:
        return runner.run_job(settings=settings, session_factory=session_factory, job_id=job_id)

    # An attempt runs only while its row is pending: a redelivered message for a recorded
    # attempt sends nothing (one lost mid-send is sent again: receivers dedupe on webhook-id).
    @app.task(name=webhooks.DELIVER_WEBHOOK_TASK, acks_late=True, ignore_result=True)
    def deliver_webhook(delivery_id: int) -> None:
        following = webhooks.deliver(session_factory, settings, delivery_id)
        if following is not None:
            enqueue_webhook(app, settings, following.delivery_id, countdown=following.delay)
