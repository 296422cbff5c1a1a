"""Shared test builders: job bodies, submitting, waiting for a job, worker processes.

Tiny random models come from ``bench.tiny`` (the ``tiny_model`` fixture in conftest saves one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from slimforge.app.settings import Settings

__all__ = [
    "SMOLLM2_HUB",
    "WORKER",
    "alive",
    "job_body",
    "process_env",
    "running_process",
    "submit",
    "wait_for_job",
]

REPO = Path(__file__).resolve().parent.parent
# A Hub model: the API does not read it at submit, so bodies naming it need no network.
SMOLLM2_HUB = {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "main"}
# The one way to start a worker: ``slimforge worker``.
WORKER = [sys.executable, "-m", "slimforge.cli", "worker"]


def _text(path: Path, max_tokens: int | None, seq_len: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {"path": str(path)}
    if max_tokens is not None:
        data["max_tokens"] = max_tokens
    if seq_len is not None:
        data["seq_len"] = seq_len
    return data


def job_body(
    model: Path | Mapping[str, Any],
    calibration: Path,
    evaluation: Path | None = None,
    /,
    *,
    method: Mapping[str, Any] | None = None,
    calibration_tokens: int | None = 4096,
    evaluation_tokens: int | None = 2048,
    seq_len: int | None = 128,
    **overrides: Any,
) -> dict[str, Any]:
    """A ``POST /v1/jobs`` body: ``svd`` at ratio 0.8 of ``model`` (a local folder, or a
    ``{"id": ...}`` mapping), calibrated on ``calibration`` and evaluated on ``evaluation`` if
    given. A budget or ``seq_len`` of None leaves the server's default; ``overrides`` replace
    whole top-level fields (``calibration={...}`` included)."""
    body: dict[str, Any] = {
        "model": {"path": str(model)} if isinstance(model, Path) else dict(model),
        "target": {"ratio": 0.8},
        "method": dict(method) if method is not None else {"name": "svd"},
        "calibration": _text(calibration, calibration_tokens, seq_len),
    }
    if evaluation is not None:
        body["evaluation"] = _text(evaluation, evaluation_tokens, seq_len)
    body.update(overrides)
    return body


def submit(api: TestClient, headers: dict[str, str], body: Mapping[str, Any]) -> str:
    """Submit ``body``; asserts 202 and returns the job id."""
    r = api.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def wait_for_job(
    client: httpx.Client | TestClient, job_id: str, log: Path, timeout: float = 300
) -> dict[str, Any]:
    """Poll the job until it ends; fails with the tail of the worker's ``log`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish; worker log:\n{log.read_text()[-4000:]}")


def process_env(settings: Settings) -> dict[str, str]:
    """The environment of a worker (or CLI) process with ``settings``: every field the test set
    as its ``SLIMFORGE_`` variable, on the CPU unless told otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMFORGE_")}
    env.update(
        SLIMFORGE_HOME=str(settings.home),
        SLIMFORGE_DATABASE_URL=settings.database_url,
        SLIMFORGE_BROKER_URL=settings.broker_url,
        SLIMFORGE_LOCAL_ROOTS=json.dumps([str(p) for p in settings.local_roots or []]),
        SLIMFORGE_DEVICE="cpu",
        PYTHONPATH=str(REPO),
    )
    values = settings.model_dump(mode="json")
    for name in settings.model_fields_set - {"home", "database_url", "broker_url", "local_roots"}:
        value = values[name]
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"SLIMFORGE_{name.upper()}"] = text
    return env


@contextmanager
def running_process(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``args`` running with its output in ``log``; SIGTERM (then SIGKILL) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has exited and only waits to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"
