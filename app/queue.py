"""The Celery application configuration shared by the API (producer) and the worker.

The API only *sends* ``run_job`` by name, so it never imports worker code or torch. The worker
builds its app from the same function and registers the task (``slimforge.worker.celery_app``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from slimforge.app.settings import Settings

__all__ = ["RUN_JOB_TASK", "broker_reachable", "enqueue_job", "make_celery_app"]

RUN_JOB_TASK = "slimforge.run_job"
DELIVER_WEBHOOK_TASK = "slimforge.deliver_webhook"


def make_celery_app(settings: Settings) -> Celery:
    """A Celery app configured for slimforge's one long task per message."""
    app = Celery("slimforge", broker=settings.broker_url, set_as_current=False)
    transport: dict[str, Any]
    if settings.is_embedded_broker:
        # Serverless broker for the embedded mode: messages are files in the data folder.
        queue_dir = str(settings.broker_folder / "queue")
        transport = {
            "data_folder_in": queue_dir,
            "data_folder_out": queue_dir,
            "processed_folder": str(settings.broker_folder / "processed"),
            # The exchange table defaults to ./control in the working directory: keep it here.
            "control_folder": str(settings.broker_folder / "control"),
            "store_processed": False,
        }
    else:
        # An unacknowledged message is redelivered after the visibility timeout: it must be
        # longer than the longest job, or a running job would be handed to a second worker.
        transport = {"visibility_timeout": settings.max_job_seconds + 3600}
    app.conf.update(
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue_name,
        task_routes={RUN_JOB_TASK: {"queue": settings.queue_name}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def enqueue_job(celery: Celery, settings: Settings, job_id: str) -> None:
    """Queue a job for the GPU workers; the message carries only the job id."""
    celery.send_task(
        RUN_JOB_TASK,
        args=[job_id],
        queue=settings.queue_name,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )


def enqueue_webhook(
    celery: Celery, settings: Settings, delivery_id: int, *, countdown: float = 0
) -> None:
    """Queue one webhook delivery attempt; the message carries only its id."""
    celery.send_task(
        DELIVER_WEBHOOK_TASK,
        args=[delivery_id],
        queue=settings.webhook_queue or settings.queue_name,
        countdown=countdown or None,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )


def broker_reachable(celery: Celery, settings: Settings) -> bool:
    """True when a message could be published now."""
    if settings.is_embedded_broker:
        return (settings.broker_folder / "queue").is_dir()
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False
