"""The Python SDK against the API under test (TestClient / ASGI transport). Its retry rules,
config and progress rendering: tests/slimforge/test_client_retries.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from slimforge.app.artifacts.models import Artifact
from slimforge.app.jobs.models import Job
from slimforge.app.settings import Settings
from slimforge.client import (
    APIError,
    AsyncClient,
    AuthenticationError,
    ChecksumMismatch,
    Client,
    EventOut,
    JobCancelled,
    JobCreate,
    JobFailed,
    SlimforgeError,
    WaitTimeout,
)
from slimforge.compression.configs import METHOD_CONFIGS
from slimforge.worker.runner import run_job
from tests import builders
from tests.conftest import make_key

STAGES = ["loading", "calibrating", "compressing", "evaluating", "exporting", "storing"]


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SLIMFORGE_URL", raising=False)
    monkeypatch.delenv("SLIMFORGE_API_KEY", raising=False)
    monkeypatch.setenv("SLIMFORGE_CONFIG", str(tmp_path / "client-config.toml"))


@pytest.fixture
def key(api: TestClient, settings: Settings) -> str:
    return make_key(settings, "acme")


@pytest.fixture
def client(api: TestClient, key: str) -> Client:
    return Client(api_key=key, http_client=api)


def job_body(model: Path, files: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    return builders.job_body(model, files["calibration"], files["evaluation"], **overrides)


def run(api: TestClient, settings: Settings, job_id: str) -> str | None:
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    return run_job(settings=settings, session_factory=factory, job_id=job_id)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- against the API ----------------------------------------------------------------------


def test_create_get_list_with_pagination_and_cancel(
    client: Client, tiny_model: Path, text_files: dict[str, Path]
) -> None:
    body = job_body(tiny_model, text_files)
    created = [client.jobs.create(body) for _ in range(4)]
    # A model works too, defaults included (the method's name is a default of SvdConfig).
    model_body = JobCreate.model_validate({**body, "method": METHOD_CONFIGS["svd"]()})
    created.append(client.jobs.create(model_body))
    assert all(j.status == "queued" for j in created)
    assert client.jobs.get(created[0].id).request["method"]["name"] == "svd"

    listed = list(client.jobs.list(limit=2))  # three pages
    assert [j.id for j in listed] == [j.id for j in reversed(created)]
    assert len(list(client.jobs.list(limit=2, max_items=3))) == 3

    # The same idempotency key replays the same job.
    first = client.jobs.create(body, idempotency_key="release-1")
    assert client.jobs.create(body, idempotency_key="release-1").id == first.id

    cancelled = client.jobs.cancel(created[1].id)
    assert cancelled.status == "cancelled"
    assert [j.id for j in client.jobs.list("cancelled")] == [created[1].id]
    with pytest.raises(JobCancelled) as info:
        client.jobs.wait(created[1].id)
    assert info.value.job.status == "cancelled"
    with pytest.raises(WaitTimeout) as timeout:
        client.jobs.wait(created[2].id, timeout=0.2, poll_interval=0.05)
    assert isinstance(timeout.value, TimeoutError) and timeout.value.status == "queued"


def test_wait_follows_the_stage_events_and_returns_the_job(
    api: TestClient, client: Client, settings: Settings, tiny_model: Path, text_files
) -> None:
    job = client.jobs.create(job_body(tiny_model, text_files))
    assert run(api, settings, job.id) == "succeeded"
    seen: list[EventOut] = []
    done = client.jobs.wait(job.id, poll_interval=0.01, on_event=seen.append)
    assert done.status == "succeeded" and done.metrics["params_after"] > 0
    stages = [e.stage for e in seen if e.message.startswith("stage ")]
    assert stages == STAGES
    blocks = [e.data for e in seen if e.stage == "compressing" and "index" in e.data]
    assert blocks and blocks[-1]["index"] == blocks[-1]["total"]
    # The event log, paged and streamed (server-sent events), is the same.
    paged = [e.id for e in client.jobs.events(job.id)]
    assert paged == [e.id for e in seen]
    assert [e.id for e in client.jobs.events(job.id, stream=True)] == paged
    assert [e.id for e in client.jobs.events(job.id, after=paged[-3])] == paged[-2:]


def test_download_verifies_every_checksum_and_refuses_tampering(
    api: TestClient,
    client: Client,
    settings: Settings,
    tiny_model: Path,
    text_files,
    tmp_path: Path,
) -> None:
    job = client.jobs.create(job_body(tiny_model, text_files))
    assert run(api, settings, job.id) == "succeeded"
    listing = client.jobs.artifacts(job.id)
    out = tmp_path / "out"
    paths = client.jobs.download(job.id, out)
    assert sorted(p.relative_to(out).as_posix() for p in paths) == sorted(
        f.path for f in listing.files
    )
    for entry in listing.files:
        assert sha256(out / entry.path) == entry.sha256
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} <= {f.path for f in listing.files}
    only = client.jobs.download(job.id, tmp_path / "one", files=["config.json"])
    assert only == [tmp_path / "one" / "config.json"]
    with pytest.raises(SlimforgeError, match=r"no artifact file 'nope\.bin'"):
        client.jobs.download(job.id, tmp_path / "none", files=["nope.bin"])

    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    # A tampered manifest: the file no longer matches it; nothing is left behind.
    with factory() as session:
        artifact = session.scalar(select(Artifact).where(Artifact.job_id == job.id))
        assert artifact is not None
        artifact.files = [
            {**f, "sha256": "0" * 64} if f["path"] == "config.json" else f for f in artifact.files
        ]
        session.commit()
        location = artifact.location
    bad = tmp_path / "bad"
    with pytest.raises(ChecksumMismatch) as info:
        client.jobs.download(job.id, bad, files=["config.json"])
    assert info.value.path == "config.json" and info.value.expected == "0" * 64
    assert list(bad.rglob("*")) == []
    # A tampered file (same size, one byte changed) in the store.
    stored = settings.artifacts_root / location / "generation_config.json"
    data = bytearray(stored.read_bytes())
    data[0] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match=r"generation_config\.json"):
        client.jobs.download(job.id, bad, files=["tokenizer.json", "generation_config.json"])
    assert [p.name for p in bad.iterdir()] == ["tokenizer.json"]  # finished before the bad one


def test_wait_on_a_failed_job_raises_with_its_error(
    api: TestClient, client: Client, settings: Settings, tiny_model: Path, text_files
) -> None:
    job = client.jobs.create(job_body(tiny_model, text_files))
    factory = api.app.state.session_factory  # type: ignore[attr-defined]
    with factory() as session:  # a target the worker finds unreachable (see test_runner)
        row = session.scalar(select(Job).where(Job.id == job.id))
        assert row is not None
        row.spec = {**row.spec, "target": {"params": 1000, "ratio": None}}
        session.commit()
    assert run(api, settings, job.id) == "failed"
    seen: list[EventOut] = []
    with pytest.raises(JobFailed) as info:
        client.jobs.wait(job.id, on_event=seen.append)
    assert info.value.job.status == "failed" and info.value.job.stage == "loading"
    assert "reachable range" in (info.value.job.error or "")
    assert "reachable range" in str(info.value)
    assert seen[-1].level == "error"


def test_api_errors_are_parsed(
    api: TestClient, client: Client, tiny_model: Path, text_files
) -> None:
    with pytest.raises(APIError) as info:
        client.jobs.create(job_body(tiny_model, text_files, target={"ratio": 2}))
    err = info.value
    assert err.status_code == 422 and err.code == "invalid_input"
    assert "target.ratio" in err.message
    assert any(d["field"] == "target.ratio" for d in err.details)
    with pytest.raises(APIError) as missing:
        client.jobs.get("job_doesnotexist")
    assert missing.value.status_code == 404 and missing.value.code == "not_found"
    assert {m.name for m in client.methods()} >= {"svd", "lillama", "minitron"}


def test_a_bad_or_missing_key_is_an_authentication_error(api: TestClient) -> None:
    with pytest.raises(AuthenticationError) as info:
        Client(api_key="sf_not-a-key", http_client=api).methods()
    assert info.value.status_code == 401 and info.value.message
    with pytest.raises(AuthenticationError):
        list(Client(http_client=api).jobs.list())


def test_async_client_basics(
    api: TestClient, key: str, settings: Settings, tiny_model: Path, text_files, tmp_path: Path
) -> None:
    async def main() -> None:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as http:
            client = AsyncClient(api_key=key, http_client=http)
            other = await client.jobs.create(job_body(tiny_model, text_files))
            job = await client.jobs.create(job_body(tiny_model, text_files))
            assert (await client.jobs.get(job.id)).status == "queued"
            assert [j.id async for j in client.jobs.list(limit=1)] == [job.id, other.id]
            assert (await client.jobs.cancel(other.id)).status == "cancelled"
            seen: list[EventOut] = []
            # The worker runs while the client waits.
            result, done = await asyncio.gather(
                asyncio.to_thread(run, api, settings, job.id),
                client.jobs.wait(job.id, poll_interval=0.05, on_event=seen.append),
            )
            assert result == "succeeded" and done.status == "succeeded"
            assert [e.stage for e in seen if e.message.startswith("stage ")] == STAGES
            streamed = [e.id async for e in client.jobs.events(job.id, stream=True)]
            assert streamed == [e.id for e in seen]
            paths = await client.jobs.download(job.id, tmp_path / "async-out")
            listing = await client.jobs.artifacts(job.id)
            assert {p.name for p in paths} == {Path(f.path).name for f in listing.files}
            assert all(sha256(tmp_path / "async-out" / f.path) == f.sha256 for f in listing.files)
            with pytest.raises(JobCancelled):
                await client.jobs.wait(other.id)
            with pytest.raises(APIError) as info:
                await client.jobs.create(job_body(tiny_model, text_files, target={}))
            assert info.value.status_code == 422
            with pytest.raises(AuthenticationError):
                await AsyncClient(api_key="sf_bad", http_client=http).methods()

    asyncio.run(main())
