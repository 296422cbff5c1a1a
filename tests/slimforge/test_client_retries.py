"""The Python SDK's retry rules (against a mock transport), its config resolution and its
progress rendering."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from slimforge.client import (
    APIError,
    Client,
    ConnectionFailed,
    EventOut,
)
from slimforge.client._common import backoff_delay, parse_retry_after


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SLIMFORGE_URL", raising=False)
    monkeypatch.delenv("SLIMFORGE_API_KEY", raising=False)
    monkeypatch.setenv("SLIMFORGE_CONFIG", str(tmp_path / "client-config.toml"))


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
