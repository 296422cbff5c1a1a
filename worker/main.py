"""Start a worker process: ``slimforge worker`` (or ``python -m worker``)."""

from __future__ import annotations

import os
import socket

from app.settings import Settings
from worker.celery_app import make_celery


def start_worker(settings: Settings, *, loglevel: str = "INFO") -> None:
    """Consume the GPU queue, one job at a time, in this process (``--pool solo``)."""
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
    app.worker_main(argv)


if __name__ == "__main__":
    start_worker(Settings())
