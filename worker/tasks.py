"""Celery tasks: transport only. The message carries a job id; ``runner.run_job`` does the work.

``run_job`` is idempotent thanks to the job lease, which is what makes ``acks_late`` safe: a
message redelivered after a worker crash, or twice by the broker, never runs a job twice.
"""

from __future__ import annotations

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app.queue import RUN_JOB_TASK
from app.settings import Settings
from worker import runner


def register_tasks(
    app: Celery, *, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    @app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_job(job_id: str) -> str | None:
        return runner.run_job(settings=settings, session_factory=session_factory, job_id=job_id)
