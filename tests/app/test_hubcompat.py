"""The Hub-compatible read API, driven by the real ``huggingface_hub`` client, ``transformers``
and the ``hf`` CLI over real HTTP (uvicorn on 127.0.0.1), with no patching."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from sqlalchemy import update

from bench.tiny import save_tiny_llama
from slimforge.app.artifacts.service import record_artifact
from slimforge.app.artifacts.storage import make_store
from slimforge.app.db import session_scope, utcnow
from slimforge.app.jobs.models import Job
from slimforge.app.main import create_app
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings
from tests.conftest import CORPUS, make_key

HF_CLI = Path(sys.executable).parent / "hf"


@dataclass(frozen=True)
class Served:
    endpoint: str
    key: str  # tenant "acme"
    other_key: str  # tenant "globex"
    repo_id: str
    pending_repo_id: str  # a job of acme without an artifact yet
    model: Path  # the original model folder, to compare with
    files: dict[str, bytes]
    commit: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@contextlib.contextmanager
def _serve(settings: Settings) -> Iterator[tuple[str, FastAPI]]:
    """The real app under uvicorn on a free loopback port, in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = create_app(settings)
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        app.state.engine.dispose()


def _submit(endpoint: str, key: str) -> str:
    body = {
        "model": {"id": "org/model"},
        "target": {"ratio": 0.5},
        "method": {"name": "svd"},
        "calibration": {"path": "c.txt"},
    }
    r = httpx.post(f"{endpoint}/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code in (200, 201, 202), r.text
    return str(r.json()["id"])


def _manifest(folder: Path) -> list[dict[str, Any]]:
    return [
        {
            "path": p.relative_to(folder).as_posix(),
            "size": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """acme's finished job whose artifact is a real tiny Llama, stored and recorded as the
    worker would, behind the running API."""
    root = tmp_path_factory.mktemp("hubcompat")
    settings = Settings(home=root / "home", local_roots=[root, CORPUS])
    upgrade(settings)
    (root / "c.txt").write_text("calibration text")
    with _serve(settings) as (endpoint, app):
        key, other_key = make_key(settings, "acme"), make_key(settings, "globex")
        job_id, pending = _submit(endpoint, key), _submit(endpoint, key)
        model = save_tiny_llama(root / "model")
        staging = shutil.copytree(model, root / "staging")  # put_folder consumes its folder
        manifest = _manifest(staging)
        location = make_store(settings).put_folder(job_id, staging)
        with session_scope(app.state.session_factory) as session:
            record_artifact(session, job_id=job_id, location=location, files=manifest)
            session.execute(
                update(Job).where(Job.id == job_id).values(status="succeeded", finished_at=utcnow())
            )
        files = {f["path"]: (model / f["path"]).read_bytes() for f in manifest}
        commit = hashlib.sha1(
            b"".join(f"{p}\0{hashlib.sha256(d).hexdigest()}\n".encode() for p, d in files.items())
        ).hexdigest()
        yield Served(
            endpoint=endpoint,
            key=key,
            other_key=other_key,
            repo_id=f"acme/{job_id}",
            pending_repo_id=f"acme/{pending}",
            model=model,
            files=files,
            commit=commit,
        )


def _hf_env(served: Served, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=served.endpoint,
        HF_TOKEN=served.key,
        HF_HOME=str(home),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="1",
    )
    return env


def test_snapshot_download_and_hf_hub_download(served: Served, tmp_path: Path) -> None:
    folder = snapshot_download(
        served.repo_id, endpoint=served.endpoint, token=served.key, cache_dir=tmp_path / "c"
    )
    assert Path(folder).name == served.commit
    got = {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in Path(folder).rglob("*")
        if p.is_file()
    }
    assert got == served.files
    one = hf_hub_download(
        served.repo_id,
        "config.json",
        endpoint=served.endpoint,
        token=served.key,
        cache_dir=tmp_path / "c2",
    )
    assert Path(one).read_bytes() == served.files["config.json"]
    # The cache names blobs by ETag: the sha256, as for the Hub's LFS files.
    digest = hashlib.sha256(served.files["config.json"]).hexdigest()
    assert Path(one).resolve().name == digest


def test_model_info_and_listings(served: Served) -> None:
    api = HfApi(endpoint=served.endpoint, token=served.key)
    info = api.model_info(served.repo_id)
    assert info.id == served.repo_id and info.sha == served.commit and info.private
    assert info.library_name == "transformers" and info.last_modified is not None
    assert sorted(s.rfilename for s in info.siblings or []) == sorted(served.files)
    detailed = api.model_info(served.repo_id, revision=served.commit, files_metadata=True)
    for sibling in detailed.siblings or []:
        data = served.files[sibling.rfilename]
        assert sibling.size == len(data) and sibling.lfs is not None
        assert sibling.lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(api.list_repo_files(served.repo_id)) == sorted(served.files)
    tree = list(api.list_repo_tree(served.repo_id, recursive=True))
    assert {f.path: f.size for f in tree} == {p: len(d) for p, d in served.files.items()}


def test_transformers_loads_and_generates_from_the_service(served: Served, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        repo, local = sys.argv[1], sys.argv[2]
        hub = AutoModelForCausalLM.from_pretrained(repo).eval()
        ref = AutoModelForCausalLM.from_pretrained(local).eval()
        tok = AutoTokenizer.from_pretrained(repo)
        ids = tok("hello world", return_tensors="pt").input_ids
        with torch.no_grad():
            diff = (hub(ids).logits - ref(ids).logits).abs().max().item()
            out = hub.generate(ids, max_new_tokens=4, do_sample=False)
        print(json.dumps({"diff": diff, "new": out.shape[1] - ids.shape[1]}))
        """
    )
    home = tmp_path / "hf"
    run = subprocess.run(
        [sys.executable, "-c", script, served.repo_id, str(served.model)],
        env=_hf_env(served, home),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["diff"] <= 1e-5 and result["new"] == 4
    cached = home / "hub" / f"models--{served.repo_id.replace('/', '--')}" / "snapshots"
    assert (cached / served.commit / "model.safetensors").is_file()


@pytest.mark.skipif(not HF_CLI.exists(), reason="no hf CLI in this environment")
def test_hf_download_cli(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    run = subprocess.run(
        [str(HF_CLI), "download", served.repo_id, "--local-dir", str(dest)],
        env=_hf_env(served, tmp_path / "hf"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert {p: (dest / p).read_bytes() for p in served.files} == served.files


def test_errors_are_the_hubs(served: Served, tmp_path: Path) -> None:
    api = HfApi(endpoint=served.endpoint, token=served.key)
    for repo_id in [served.pending_repo_id, "acme/job_nosuchjob", "globex/" + served.repo_id[5:]]:
        with pytest.raises(RepositoryNotFoundError):
            api.model_info(repo_id)
    # Another tenant's key sees nothing of acme's repository.
    other = HfApi(endpoint=served.endpoint, token=served.other_key)
    with pytest.raises(RepositoryNotFoundError) as caught:
        other.model_info(served.repo_id)
    assert caught.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            served.repo_id,
            "config.json",
            endpoint=served.endpoint,
            token=served.other_key,
            cache_dir=tmp_path,
        )
    with pytest.raises(HfHubHTTPError) as caught:
        HfApi(endpoint=served.endpoint, token="sf_not-a-key").model_info(served.repo_id)
    assert caught.value.response.status_code == 401
    assert not isinstance(caught.value, RepositoryNotFoundError)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(
            served.repo_id,
            "nope.bin",
            endpoint=served.endpoint,
            token=served.key,
            cache_dir=tmp_path,
        )
    with pytest.raises(RevisionNotFoundError):
        api.model_info(served.repo_id, revision="v2")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(served.repo_id, revision="refs/pr/1")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            served.repo_id,
            "config.json",
            revision="0" * 40,
            endpoint=served.endpoint,
            token=served.key,
            cache_dir=tmp_path,
        )
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(served.repo_id, path_in_repo="no/such/folder"))


def test_resolve_headers_head_and_range(served: Served) -> None:
    url = f"{served.endpoint}/{served.repo_id}/resolve/main/model.safetensors"
    data = served.files["model.safetensors"]
    head = httpx.head(url, headers=served.auth())
    assert head.status_code == 200 and head.content == b""
    assert head.headers["x-repo-commit"] == served.commit
    assert head.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert head.headers["x-linked-etag"] == head.headers["etag"]
    assert head.headers["content-length"] == head.headers["x-linked-size"] == str(len(data))
    assert not [h for h in head.headers if h.lower().startswith("x-xet")]
    part = httpx.get(url, headers={**served.auth(), "Range": "bytes=10-29"})
    assert part.status_code == 206 and part.content == data[10:30]
    missing = httpx.get(url.replace("model.safetensors", "nope"), headers=served.auth())
    assert missing.status_code == 404 and missing.headers["x-error-code"] == "EntryNotFound"
    assert missing.headers["x-repo-commit"] == served.commit  # lets the client cache the miss
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401 and "error" in anonymous.json()


def test_openapi_lists_the_hub_routes_once(served: Served) -> None:
    schema = httpx.get(f"{served.endpoint}/openapi.json").json()
    ids = [op["operationId"] for item in schema["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    resolve = schema["paths"]["/{namespace}/{name}/resolve/{revision}/{path}"]
    assert set(resolve) == {"get"}
    assert "/api/models/{namespace}/{name}/tree/{revision}" in schema["paths"]
    assert httpx.get(f"{served.endpoint}/healthz").status_code == 200
