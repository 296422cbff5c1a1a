"""Start a worker process: ``slimforge worker`` (or ``python -m worker``)."""

from __future__ import annotations

import os
import socket

from app.db import make_engine, make_session_factory
from app.settings import Settings
from worker.celery_app import make_celery
from worker.recovery import OrphanSweeper


def start_worker(settings: Settings, *, loglevel: str = "INFO") -> None:
    """Consume the GPU queue, one job at a time, in this process (``--pool solo``), and requeue
    jobs whose worker died (see ``worker.recovery``)."""
    settings.ensure_dirs()
    app = make_celery(settings)
    argv = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={settings.queue_name}",
        f"--hostname=slimforge-{socket.gethostname()}-{os.getpid()}@%h",
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


if __name__ == "__main__":
    start_worker(Settings())
