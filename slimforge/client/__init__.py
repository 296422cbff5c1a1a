"""Python SDK of the slimforge API.

    from slimforge.client import Client

    with Client() as client:                      # SLIMFORGE_URL / SLIMFORGE_API_KEY / config
        job = client.jobs.create({
            "model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            "target": {"ratio": 0.8},
            "method": {"name": "svd"},
            "calibration": {"synthetic": True},
        })
        job = client.jobs.wait(job.id, on_event=lambda e: print(e.stage, e.message))
        client.jobs.download(job.id, "out/")       # sha256-checked, atomic per file

:class:`AsyncClient` has the same API with coroutines. Errors derive from
:class:`SlimforgeError`. :func:`verify_webhook` checks a webhook delivery's signature.
"""

from __future__ import annotations

from slimforge.client._async import AsyncClient
from slimforge.client._config import config_path, load_config, resolve_config, save_config
from slimforge.client._errors import (
    APIError,
    AuthenticationError,
    ChecksumMismatch,
    ConnectionFailed,
    JobCancelled,
    JobFailed,
    SlimforgeError,
    WaitTimeout,
)
from slimforge.client._sync import Client
from slimforge.contract.artifacts import ArtifactFileOut, ArtifactOut
from slimforge.contract.jobs import EventOut, EventPage, JobCreate, JobOut, JobPage
from slimforge.contract.methods import MethodOut
from slimforge.contract.signing import WebhookVerificationError, verify_webhook

__all__ = [
    "APIError",
    "ArtifactFileOut",
    "ArtifactOut",
    "AsyncClient",
    "AuthenticationError",
    "ChecksumMismatch",
    "Client",
    "ConnectionFailed",
    "EventOut",
    "EventPage",
    "JobCancelled",
    "JobCreate",
    "JobFailed",
    "JobOut",
    "JobPage",
    "MethodOut",
    "SlimforgeError",
    "WaitTimeout",
    "WebhookVerificationError",
    "config_path",
    "load_config",
    "resolve_config",
    "save_config",
    "verify_webhook",
]
