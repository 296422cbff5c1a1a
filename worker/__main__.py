"""``python -m slimforge.worker``: a job worker; ``python -m slimforge.worker --webhooks``: a
delivery worker."""

import sys

from slimforge.app.settings import Settings
from slimforge.worker.main import start_worker

start_worker(Settings(), deliveries="--webhooks" in sys.argv[1:])
