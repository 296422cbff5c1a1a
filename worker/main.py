"""Start a worker process; the command is ``slimforge worker`` (``slimforge.cli``)."""

from __future__ import annotations

import os
import socket

from slimforge.app.db import make_engine, make_session_factory
from slimforge.app.settings import Settings
from slimforge.worker.celery_app import make_celery
from slimforge.worker.recovery import OrphanSweeper


def start_worker(settings: Settings, *, loglevel: str = "INFO", deliveries: bool = False) -> None:
    """Consume the GPU queue, one job at a time, in this process (``--pool solo``), and requeue
    jobs whose worker died (see ``slimforge.worker.recovery``).

    ``deliveries``: a light worker for webhook deliveries only: it consumes ``webhook_queue``
    with ``webhook_concurrency`` threads and runs no job, so an event is delivered while the
    GPU workers are busy with hours-long jobs (which then do not consume that queue).
    """
    settings.ensure_dirs()
    if deliveries and not settings.webhook_queue:
        raise SystemExit(
            "a delivery worker needs its own queue: set SLIMFORGE_WEBHOOK_QUEUE (e.g. webhooks) "
            "for the API and every worker"
        )
    app = make_celery(settings)
    if deliveries:
        pool = ["--pool=threads", f"--concurrency={settings.webhook_concurrency}"]
        queue, role = settings.webhook_queue, "webhooks"
    else:
        pool, queue, role = ["--pool=solo", "--concurrency=1"], settings.queue_name, "jobs"
    argv = [
        "worker",
        *pool,
        f"--queues={queue}",
        f"--hostname=slimforge-{role}-{socket.gethostname()}-{os.getpid()}@%h",
        f"--loglevel={loglevel}",
        # The file-system broker has no broadcast exchange; production does not need them either.
        "--without-gossip",
        "--without-mingle",
    ]
    # Jobs whose worker died are requeued by any live worker and resume from checkpoints.
    engine = make_engine(settings.database_url)
    sweeper = OrphanSweeper(
        settings=settings, session_factory=make_session_factory(engine), celery=app
    )
    sweeper.start()
    try:
        app.worker_main(argv)
    finally:
        sweeper.stop()
        engine.dispose()
