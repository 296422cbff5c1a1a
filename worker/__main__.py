"""``python -m worker``: a job worker; ``python -m worker --webhooks``: a delivery worker."""

import sys

from app.settings import Settings
from worker.main import start_worker

start_worker(Settings(), deliveries="--webhooks" in sys.argv[1:])
