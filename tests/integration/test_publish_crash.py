"""kill -9 the worker while it publishes to the Hub: another worker takes the job over, ends it
``succeeded``, and the Hub holds the artifact's files from exactly one commit (issue 7: "Hub
pushes are not duplicated"). Real worker processes, real Redis and PostgreSQL, the local
Hub-protocol server of tests/hubserver.py with the real huggingface_hub client.

Two places of the push, each held open by the hub server (``LocalHub.stall``) so that the kill
lands there and nowhere else:

- ``upload``: an LFS object is half sent; nothing is committed yet.
- ``commit``: the commit is applied on the Hub, but the worker dies before it hears so (and so
  before it records the push in the job's metrics): the next worker must not commit again.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.tiny import save_tiny_llama
from slimforge.app.main import create_app
from slimforge.app.settings import Settings
from tests.builders import WORKER, alive, process_env, running_process, wait_for_job
from tests.conftest import make_key
from tests.hubserver import LocalHub, running_hub
from tests.integration.deploy import migrated_settings

pytestmark = pytest.mark.services

HUB_TOKEN = "hf_localtesttoken"
REPO_ID = "acme/tiny-slim"
COMMIT_ROUTE = f"POST /api/models/{REPO_ID}/commit/main"
LFS_PUT = "PUT /lfs-objects/"  # then the object's sha256


@dataclass
class Deployment:
    """What a test needs besides the workers it starts."""

    settings: Settings
    env: dict[str, str]  # for the worker processes
    client: TestClient
    hub: LocalHub
    body: dict[str, Any]
    logs: Path


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_url: str,
    postgres_url: str,
    text_files: dict[str, Path],
) -> Iterator[Deployment]:
    """API, database and Hub for one test; the test starts (and kills) the workers."""
    settings = migrated_settings(
        tmp_path,
        postgres_url=postgres_url,
        redis_url=redis_url,
        database=f"publish_crash_{request.node.callspec.id}",
        lease_seconds=5,
        rate_limit_per_minute=0,
    )
    model = save_tiny_llama(tmp_path / "tiny")
    key = make_key(settings, "acme")
    body: dict[str, Any] = {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        # Small: the test is about publishing, compression only has to produce an artifact.
        "calibration": {"path": str(text_files["calibration"]), "max_tokens": 2048},
        "output": {"hub_repo": REPO_ID, "commit_message": "compressed by slimforge"},
    }
    with running_hub(tmp_path / "hub", token=HUB_TOKEN) as hub:
        env = {
            **process_env(settings),
            **hub.env,  # Xet off: the push goes through LFS, which this hub speaks
            "HF_HOME": str(tmp_path / "hf-home"),  # not the user's cache or saved token
            "SLIMFORGE_HUB_ENDPOINT": hub.endpoint,
            "SLIMFORGE_PUBLISH_BACKOFF_SECONDS": "0.2",
        }
        app = create_app(settings)
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            r = client.put("/v1/credentials/hub", json={"token": HUB_TOKEN})
            assert r.status_code < 300, r.text
            yield Deployment(settings, env, client, hub, body, tmp_path)
        app.state.engine.dispose()


def _events(client: TestClient, job_id: str) -> list[str]:
    items = client.get(f"/v1/jobs/{job_id}/events?limit=1000").json()["items"]
    return [str(e["message"]) for e in items]


def _lfs_puts(hub: LocalHub) -> list[str]:
    """The sha256 of every LFS object PUT to the hub so far, once per request."""
    return [r.removeprefix(LFS_PUT) for r in hub.requests if r.startswith(LFS_PUT)]


def _descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (from /proc), to check that none outlives a worker."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended while we looked
                continue
            parents[int(entry.name)] = int(stat.rsplit(") ", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


@pytest.mark.parametrize("point", ["upload", "commit"])
def test_a_worker_killed_while_publishing_pushes_once(deployment: Deployment, point: str) -> None:
    """SIGKILL at ``point`` of the push; a second worker ends the job with one commit."""
    d, client, hub = deployment, deployment.client, deployment.hub
    stall = hub.stall(point, seconds=120)  # released by the test right after the kill
    job_id = client.post("/v1/jobs", json=d.body).json()["id"]

    log = d.logs / "killed.log"
    with running_process(WORKER, d.env, log) as worker:
        deadline = time.monotonic() + 120
        while not stall.wait_arrived(0.05):
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            assert worker.poll() is None, log.read_text()[-4000:]
        orphans = _descendants(worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    stall.release()  # the held request now finds its client gone

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "running" and job["stage"] == "publishing", job
    assert "hub" not in (job["metrics"] or {})  # the push was not recorded
    if point == "upload":  # killed mid-upload: nothing committed, the held object not stored
        assert hub.commits(REPO_ID) == []
        cut_short = [sha for sha in _lfs_puts(hub) if not hub.blob(sha).exists()]
        assert cut_short, "\n".join(hub.requests)
    else:  # killed after the commit landed, before the worker heard of it
        assert len(hub.commits(REPO_ID)) == 1

    log = d.logs / "survivor.log"
    with running_process(WORKER, d.env, log) as worker:
        job = wait_for_job(client, job_id, log, timeout=120)
        assert job["status"] == "succeeded", (job["error"], log.read_text()[-4000:])
        orphans |= _descendants(worker.pid)
        survivor = worker.pid
    assert worker.returncode is not None

    # Resumed from the stored artifact: only the publishing stage ran again.
    assert job["attempts"] == 2, job
    events = _events(client, job_id)
    assert "worker lost (lease expired); job requeued and will resume" in events
    assert "artifact already stored; continuing from there" in events
    assert events.count("stage compressing started") == 1
    assert events.count("stage publishing started") == 2
    assert events.count("pushed to the Hub") == 1

    # The Hub holds exactly the artifact, byte for byte, from one commit: the recorded one.
    listing = client.get(f"/v1/jobs/{job_id}/artifacts").json()["files"]
    expected = {f["path"]: f["sha256"] for f in listing}
    assert any(path.endswith(".safetensors") for path in expected)
    stored = hub.files(REPO_ID)
    assert {path: hashlib.sha256(data).hexdigest() for path, data in stored.items()} == expected
    commits = hub.commits(REPO_ID)
    assert len(commits) == 1, commits  # a second worker's push did not commit again
    (commit,) = commits
    assert commit["message"] == "compressed by slimforge"
    assert job["metrics"]["hub"]["commit_oid"] == commit["id"]
    if point == "upload":  # the second worker sent the cut-short object again
        assert all(_lfs_puts(hub).count(sha) == 2 for sha in cut_short), "\n".join(hub.requests)
    else:  # the second worker saw the files there and sent no commit at all
        assert hub.requests.count(COMMIT_ROUTE) == 1, "\n".join(hub.requests)

    # Nothing left behind: no job running, no process, no scratch or half-written file.
    assert client.get("/v1/jobs?status=running").json()["items"] == []
    assert not alive(survivor)
    assert [pid for pid in orphans if alive(pid)] == []
    assert not (d.settings.work_root / job_id).exists()
    assert [p.name for p in d.settings.artifacts_root.iterdir()] == [job_id]
    assert [p.name for p in hub.objects.iterdir() if p.name.startswith(".")] == []
