"""The Celery configuration shared by API and worker: one long job per message, safely."""

from __future__ import annotations

from slimforge.app.queue import RUN_JOB_TASK, make_celery_app
from slimforge.app.settings import Settings
from slimforge.worker.celery_app import make_celery


def test_production_broker_settings(tmp_path) -> None:
    settings = Settings(home=tmp_path, broker_url="redis://127.0.0.1:6379/0", max_job_seconds=7200)
    conf = make_celery_app(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    # Redelivery of an unacknowledged message must not happen while the job can still run.
    assert conf.broker_transport_options["visibility_timeout"] > settings.max_job_seconds
    assert conf.task_routes[RUN_JOB_TASK] == {"queue": "gpu"}


def test_embedded_broker_needs_no_server(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    settings.ensure_dirs()
    conf = make_celery_app(settings).conf
    assert conf.broker_url == "filesystem://"
    options = conf.broker_transport_options
    assert options["data_folder_in"] == str(tmp_path / "broker" / "queue")
    # Nothing may land in the working directory (kombu's default control folder is ./control).
    assert options["control_folder"] == str(tmp_path / "broker" / "control")


def test_worker_registers_the_task_that_only_carries_a_job_id(tmp_path) -> None:
    app = make_celery(Settings(home=tmp_path))
    task = app.tasks[RUN_JOB_TASK]
    assert task.acks_late and task.ignore_result
    assert list(task.__wrapped__.__code__.co_varnames[: task.__wrapped__.__code__.co_argcount]) == [
        "job_id"
    ]
