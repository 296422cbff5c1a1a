"""The Python SDK against the API under test (TestClient / ASGI transport), and its retry rules
against a mock transport."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.artifacts.models import Artifact
from app.jobs.models import Job
from app.settings import Settings
from compression.configs import METHOD_CONFIGS
from slimforge.client import (
    APIError,
    AsyncClient,
    AuthenticationError,
    ChecksumMismatch,
    Client,
    ConnectionFailed,
    EventOut,
    JobCancelled,
    JobCreate,
    JobFailed,
    SlimforgeError,
    WaitTimeout,
)
from slimforge.client._common import backoff_delay, parse_retry_after
from tests.conftest import make_key
from tests.tiny import save_tiny_llama
from worker.runner import run_job

STAGES = ["loading", "calibrating", "compressing", "evaluating", "exporting", "storing"]


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SLIMFORGE_URL", raising=False)
    monkeypatch.delenv("SLIMFORGE_API_KEY", raising=False)
    monkeypatch.setenv("SLIMFORGE_CONFIG", str(tmp_path / "client-config.toml"))


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return save_tiny_llama(tmp_path / "tiny-llama")


@pytest.fixture
def key(api: TestClient, settings: Settings) -> str:
    return make_key(settings, "acme")


@pytest.fixture
def client(api: TestClient, key: str) -> Client:
    return Client(api_key=key, http_client=api)


def job_body(model: Path, files: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"path": str(model)},
        "target": {"ratio": 0.8},
        "method": {"name": "svd"},
        "calibration": {"path": str(files["calibration"]), "max_tokens": 4096, "seq_len": 128},
        "evaluation": {"path": str(files["evaluation"]), "max_tokens": 2048, "seq_len": 128},
    }
    body.update(overrides)
    return body


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


# --- retries, against a mock transport ----------------------------------------------------


Handler = Callable[[httpx.Request], httpx.Response]


def mock_client(handler: Handler, **kwargs: Any) -> tuple[Client, list[float]]:
    """A client on a mock transport whose sleeps are recorded, not slept."""
    delays: list[float] = []
    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = Client("http://sf.test", "sf_key", http_client=http, sleep=delays.append, **kwargs)
    return client, delays


def replies(*responses: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering ``responses`` in turn (the last one from then on)."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler, seen


PAGE = {"items": [], "next_cursor": None}
UNAVAILABLE = {"error": {"code": "unavailable", "message": "the database is unavailable"}}
JOB = {
    "id": "job_1",
    "status": "queued",
    "stage": None,
    "method": "svd",
    "created_at": "2026-01-01T00:00:00Z",
    "started_at": None,
    "finished_at": None,
    "cancel_requested": False,
    "attempts": 0,
    "error": None,
    "metrics": {},
    "metadata": {},
    "request": {},
    "links": {},
}


def test_retry_after_in_seconds_and_as_an_http_date_is_honoured() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    handler, seen = replies(
        httpx.Response(503, json=UNAVAILABLE, headers={"Retry-After": "7"}),
        httpx.Response(429, headers={"Retry-After": when}),
        httpx.Response(200, json=PAGE),
    )
    client, delays = mock_client(handler)
    assert list(client.jobs.list()) == []
    assert len(seen) == 3 and seen[0].headers["Authorization"] == "Bearer sf_key"
    assert delays[0] == 7 and 27 <= delays[1] <= 30


def test_backoff_grows_exponentially_with_jitter_then_gives_up() -> None:
    handler, _ = replies(
        httpx.Response(502), httpx.Response(504), httpx.Response(502), httpx.Response(200, json=[])
    )
    client, delays = mock_client(handler, backoff_base=1.0)
    assert client.methods() == []
    assert len(delays) == 3
    for attempt, delay in enumerate(delays):
        assert 2**attempt / 2 <= delay <= 2**attempt
    handler, seen = replies(httpx.Response(503, json=UNAVAILABLE))
    client, delays = mock_client(handler, max_retries=2)
    with pytest.raises(APIError) as info:
        client.methods()
    assert info.value.status_code == 503 and info.value.code == "unavailable"
    assert len(seen) == 3 and len(delays) == 2
    assert "the database is unavailable" in str(info.value)
    # A Retry-After beyond what is worth waiting for goes back to the caller at once.
    handler, seen = replies(httpx.Response(503, headers={"Retry-After": "3600"}))
    client, delays = mock_client(handler)
    with pytest.raises(APIError):
        client.methods()
    assert len(seen) == 1 and delays == []


def test_job_creation_is_retried_only_with_an_idempotency_key() -> None:
    handler, seen = replies(httpx.Response(503, json=UNAVAILABLE), httpx.Response(202, json=JOB))
    client, delays = mock_client(handler)
    assert client.jobs.create({"model": {}}).id == "job_1"
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 2 and len(keys) == 1 and keys.pop().startswith("sdk-")
    handler, seen = replies(httpx.Response(503, json=UNAVAILABLE), httpx.Response(202, json=JOB))
    client, _ = mock_client(handler)
    client.jobs.create({"model": {}}, idempotency_key="mine")
    assert [r.headers["Idempotency-Key"] for r in seen] == ["mine", "mine"]
    # A cancel (POST without a key) is not repeated after a 503, but is after a 429.
    handler, seen = replies(httpx.Response(503, json=UNAVAILABLE), httpx.Response(202, json=JOB))
    client, delays = mock_client(handler)
    with pytest.raises(APIError):
        client.jobs.cancel("job_1")
    assert len(seen) == 1 and delays == []
    handler, seen = replies(httpx.Response(429), httpx.Response(202, json=JOB))
    client, delays = mock_client(handler)
    assert client.jobs.cancel("job_1").id == "job_1" and len(seen) == 2


def test_connection_errors_are_retried_then_reported() -> None:
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client, delays = mock_client(refuse, max_retries=2)
    with pytest.raises(ConnectionFailed, match=r"cannot reach http://sf\.test: .*refused"):
        client.jobs.get("job_1")
    assert len(calls) == 3 and len(delays) == 2
    # A real closed port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionFailed, match=f"cannot reach http://127.0.0.1:{port}"):
        Client(f"http://127.0.0.1:{port}", "k", max_retries=0).methods()


def test_retry_after_and_backoff_helpers() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("12") == 12
    assert parse_retry_after(format_datetime(now + timedelta(seconds=5), usegmt=True), now) == 5
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert backoff_delay(10, base=0.5, cap=30, rand=lambda: 1.0) == 30
    assert backoff_delay(0, base=0.5, rand=lambda: 0.0) == 0.25


def test_settings_come_from_the_environment_then_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from slimforge.client import resolve_config, save_config

    path = save_config(url="http://file:1/", api_key="sf_file")
    assert path == tmp_path / "client-config.toml" and path.stat().st_mode & 0o777 == 0o600
    cfg = resolve_config()
    assert (cfg.url, cfg.api_key, cfg.url_source) == ("http://file:1", "sf_file", "file")
    monkeypatch.setenv("SLIMFORGE_URL", "http://env:2")
    monkeypatch.setenv("SLIMFORGE_API_KEY", "sf_env")
    assert Client().base_url == "http://env:2"
    assert resolve_config().api_key == "sf_env"
    assert resolve_config("http://arg:3", "sf_arg").url == "http://arg:3"


def test_progress_line_on_a_terminal_and_plain_lines_otherwise() -> None:
    import io

    from slimforge.client._render import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def event(i: int, stage: str, message: str, **data: Any) -> EventOut:
        now = datetime.now(UTC)
        return EventOut(
            id=i, job_id="j", time=now, level="info", stage=stage, message=message, data=data
        )

    events = [
        event(1, "compressing", "stage compressing started"),
        event(2, "compressing", "trained block 0", index=1, total=4, loss_after=0.5),
        event(3, "compressing", "trained block 1", index=2, total=4, loss_after=0.25),
        event(4, "evaluating", "stage evaluating started"),
    ]
    tty = Terminal()
    progress = Progress(tty)
    for e in events:
        progress(e)
    progress.close()
    text = tty.getvalue()
    assert text.count("\n") == 2  # one line per stage, rewritten in place with \r
    assert "\rcompressing: [##########..........] 2/4, loss 0.25" in text
    plain = io.StringIO()
    progress = Progress(plain)
    for e in events:
        progress(e)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 4 and lines[2].endswith("[compressing] trained block 1 (2/4, loss 0.25)")
