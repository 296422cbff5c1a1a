"""End to end through HTTP with real processes: a Celery worker on Redis + PostgreSQL, and the
embedded mode (``slimforge serve``: SQLite, file-system broker). Each compresses a tiny random
Llama, downloads the artifact with checksum checks and loads it with plain transformers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from bench.services import free_port
from bench.tiny import save_tiny_llama
from slimforge.app.main import create_app
from slimforge.app.settings import Settings
from tests.builders import WORKER, alive, job_body, process_env, running_process, wait_for_job
from tests.conftest import REPO, make_key
from tests.integration.deploy import migrated_settings

pytestmark = pytest.mark.services

# Loads the artifact with nothing of slimforge importable: only torch + transformers.
LOAD_SCRIPT = """
import sys
for name in ("compression", "app", "worker", "slimforge", "tests"):
    sys.modules[name] = None
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
n = sum(p.numel() for p in model.parameters())
ids = tok("def f(x):", return_tensors="pt")
out = model.generate(**ids, max_new_tokens=8, do_sample=False)
print("RESULT", n, out.shape[1] - ids["input_ids"].shape[1])
"""


def _download_and_load(client: httpx.Client | TestClient, job_id: str, dest: Path) -> list[str]:
    listing = client.get(f"/v1/jobs/{job_id}/artifacts").json()
    for entry in listing["files"]:
        data = client.get(entry["url"]).content
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
        (dest / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        (dest / entry["path"]).write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(dest)],
        capture_output=True,
        text=True,
        cwd=dest,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert result, out.stdout
    return result[-1].split()[1:]


def test_worker_on_redis_and_postgres(
    tmp_path: Path, redis_url: str, postgres_url: str, text_files: dict[str, Path]
) -> None:
    settings = migrated_settings(
        tmp_path,
        postgres_url=postgres_url,
        redis_url=redis_url,
        database="e2e",
    )
    model = save_tiny_llama(tmp_path / "tiny")
    key = make_key(settings, "ci")
    app = create_app(settings)
    log = tmp_path / "worker.log"
    with (
        running_process(WORKER, process_env(settings), log),
        TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        assert client.get("/readyz").status_code == 200
        r = client.post(
            "/v1/jobs", json=job_body(model, text_files["calibration"], text_files["evaluation"])
        )
        assert r.status_code == 202, r.text
        job = wait_for_job(client, r.json()["id"], log)
        assert job["status"] == "succeeded", (job["error"], log.read_text()[-4000:])
        assert abs(job["metrics"]["params_after"] / job["metrics"]["target_params"] - 1) <= 0.01
        dest = tmp_path / "download"
        params, generated = _download_and_load(client, job["id"], dest)
        assert int(params) == job["metrics"]["params_after"] and int(generated) > 0
    app.state.engine.dispose()


def test_embedded_mode_serve_command(tmp_path: Path, text_files: dict[str, Path]) -> None:
    settings = Settings(home=tmp_path / "home", local_roots=[tmp_path])
    env = process_env(settings)
    model = save_tiny_llama(tmp_path / "tiny")
    key = subprocess.run(
        [sys.executable, "-m", "slimforge.cli", "admin", "create-key", "--tenant", "ci"],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    log = tmp_path / "serve.log"
    with running_process(
        [sys.executable, "-m", "slimforge.cli", "serve", "--port", str(port)], env, log
    ):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
            r = client.post(
                "/v1/jobs",
                json=job_body(model, text_files["calibration"], text_files["evaluation"]),
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            # Follow the server-sent events until the job ends.
            kinds, stages, workers = [], [], []
            with client.stream(
                "GET", f"/v1/jobs/{job_id}/events?stream=true", timeout=300
            ) as stream:
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        kinds.append(line[7:])
                    elif line.startswith("data: ") and kinds[-1] == "job.event":
                        event = json.loads(line[6:])
                        if event["message"].startswith("stage "):
                            stages.append(event["stage"])
                        if "worker" in event["data"]:
                            workers.append(int(event["data"]["worker"].rsplit(":", 1)[1]))
            assert kinds[-1] == "job.end", log.read_text()[-4000:]
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "succeeded", (job["error"], log.read_text()[-4000:])
            assert stages == [
                "loading",
                "calibrating",
                "compressing",
                "evaluating",
                "exporting",
                "storing",
            ]
            params, generated = _download_and_load(client, job_id, tmp_path / "download")
            assert int(params) == job["metrics"]["params_after"] and int(generated) > 0
    # Stopping `serve` stops its worker process too: nothing is left running.
    assert len(workers) == 1
    deadline = time.monotonic() + 30
    while alive(workers[0]):
        assert time.monotonic() < deadline, f"worker {workers[0]} outlived slimforge serve"
        time.sleep(0.2)
