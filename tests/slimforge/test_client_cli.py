"""The client commands as a user runs them: ``python -m slimforge.cli`` in a subprocess against
the API served by uvicorn on loopback, with a thread that runs the queued jobs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from sqlalchemy import select

from bench.tiny import save_tiny_llama
from slimforge.app.jobs.models import Job
from slimforge.app.main import create_app
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings
from slimforge.worker.runner import run_job
from tests.conftest import make_key

REPO = Path(__file__).resolve().parents[2]
CLI = Callable[..., subprocess.CompletedProcess[str]]


def _run_queued_jobs(factory: Any, settings: Settings, stop: threading.Event) -> None:
    """The worker of this test service: runs queued jobs, except those marked ``hold``."""
    while not stop.wait(0.05):
        with factory() as session:
            ids = session.scalars(select(Job.id).where(Job.status == "queued")).all()
            held = {
                j.id for j in session.scalars(select(Job).where(Job.id.in_(ids))) if j.metadata_
            }
        for job_id in ids:
            if job_id not in held:
                run_job(settings=settings, session_factory=factory, job_id=job_id)


@pytest.fixture
def service(settings: Settings) -> Iterator[str]:
    """The API on a free loopback port and a job-running thread; yields the base URL."""
    upgrade(settings)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    stop = threading.Event()
    worker = threading.Thread(
        target=_run_queued_jobs, args=(app.state.session_factory, settings, stop), daemon=True
    )
    worker.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        worker.join(timeout=30)
        server.should_exit = True
        serving.join(timeout=10)
        app.state.engine.dispose()


@pytest.fixture
def cli(service: str, settings: Settings, tmp_path: Path) -> CLI:
    """``cli(*args, env=...)``: run ``python -m slimforge.cli`` with the service and a key."""
    key = make_key(settings, "acme")

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("SLIMFORGE_")}
        full.update(
            SLIMFORGE_CONFIG=str(tmp_path / "config" / "client.toml"),
            SLIMFORGE_URL=service,
            SLIMFORGE_API_KEY=key,
            OMP_NUM_THREADS="1",
        )
        full.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "slimforge.cli", *args],
            env=full,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture
def spec(tmp_path: Path, text_files: dict[str, Path]) -> Path:
    model = save_tiny_llama(tmp_path / "tiny-llama")
    body = {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {
            "path": str(text_files["calibration"]),
            "max_tokens": 4096,
            "seq_len": 128,
        },
        "evaluation": {"path": str(text_files["evaluation"]), "max_tokens": 2048, "seq_len": 128},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _submitted_id(stderr: str) -> str:
    line = next(x for x in stderr.splitlines() if x.startswith("submitted "))
    return line.split()[1]


def test_submit_wait_then_download_status_list_events(cli: CLI, spec: Path, tmp_path: Path) -> None:
    done = cli("submit", str(spec), "--wait", "--poll", "0.1")
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout and "parameters" in done.stdout
    assert "[compressing]" in done.stderr and "stage storing started" in done.stderr
    job_id = _submitted_id(done.stderr)

    got = cli("download", job_id, "out", "--json")
    assert got.returncode == 0, got.stderr
    files = json.loads(got.stdout)["files"]
    assert {"config.json", "manifest.json"} <= {f["path"] for f in files}
    for f in files:
        assert (tmp_path / "out" / f["path"]).stat().st_size == f["size"]

    status = cli("status", job_id, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "succeeded"
    listed = cli("list", "--json", "--status", "succeeded")
    assert [j["id"] for j in json.loads(listed.stdout)] == [job_id]
    events = cli("events", job_id, "--json")
    lines = [json.loads(x) for x in events.stdout.splitlines()]
    assert lines[-1]["data"] == {"status": "succeeded"}
    followed = cli("events", job_id, "--follow")
    assert followed.returncode == 0 and "job succeeded" in followed.stdout
    methods = cli("methods", "--json")
    assert {m["name"] for m in json.loads(methods.stdout)} >= {"svd", "lillama"}


def test_a_failing_job_exits_1_with_its_error(
    cli: CLI, tmp_path: Path, text_files: dict[str, Path]
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    failed = cli(
        "submit",
        "--model",
        str(broken),
        "--ratio",
        "0.8",
        "--method",
        "svd",
        "--calibration",
        str(text_files["calibration"]),
        "--calibration-tokens",
        "4096",
        "--seq-len",
        "128",
        "--wait",
        "--poll",
        "0.1",
    )
    assert failed.returncode == 1, failed.stderr
    job_id = _submitted_id(failed.stderr)
    assert f"job {job_id} failed at loading" in failed.stderr
    assert "Traceback" not in failed.stderr
    again = cli("wait", job_id, "--json")
    assert again.returncode == 1
    job = json.loads(again.stdout)
    assert job["status"] == "failed" and job["error"] in failed.stderr


def test_timeout_cancel_and_the_exit_codes_of_wait(cli: CLI, spec: Path) -> None:
    submitted = cli("submit", str(spec), "--meta", "hold=true", "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    timed_out = cli("wait", job_id, "--timeout", "0.3", "--poll", "0.1")
    assert timed_out.returncode == 3 and "did not end within" in timed_out.stderr
    cancelled = cli("cancel", job_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    waited = cli("wait", job_id)
    assert waited.returncode == 2 and "cancelled" in waited.stderr


def test_a_wrong_key_or_no_server_is_one_line_and_non_zero(cli: CLI) -> None:
    refused = cli("list", env={"SLIMFORGE_API_KEY": "sf_wrong"})
    assert refused.returncode == 5
    assert refused.stderr.count("\n") == 1 and "API key was refused" in refused.stderr
    as_json = cli("status", "job_x", "--json", env={"SLIMFORGE_API_KEY": "sf_wrong"})
    assert json.loads(as_json.stdout)["error"]["code"] == "unauthorized"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = cli("status", "job_x", "--retries", "0", env={"SLIMFORGE_URL": closed})
    assert down.returncode == 4
    assert down.stderr.count("\n") == 1 and f"cannot reach {closed}" in down.stderr
    missing = cli("status", "job_doesnotexist")
    assert missing.returncode == 1 and "not_found" in missing.stderr


def test_config_saves_the_url_and_key_and_the_environment_overrides_it(
    cli: CLI, tmp_path: Path
) -> None:
    unset = {"SLIMFORGE_URL": "", "SLIMFORGE_API_KEY": ""}
    saved = cli("config", "--url", "http://example.test:9000/", "--api-key", "sf_saved123456")
    assert saved.returncode == 0, saved.stderr
    path = tmp_path / "config" / "client.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    shown = json.loads(cli("config", "--json", env=unset).stdout)
    assert shown["url"] == "http://example.test:9000" and shown["url_source"] == "file"
    assert shown["api_key_source"] == "file" and "sf_saved123456" not in json.dumps(shown)
    overridden = json.loads(cli("config", "--json").stdout)
    assert overridden["url_source"] == "env" and overridden["api_key_source"] == "env"
    bad = cli("config", "--url", "example.test")
    assert bad.returncode == 1 and "must start with http" in bad.stderr
