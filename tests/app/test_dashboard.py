"""The web dashboard at ``/``: its files (fast), then a real Chromium driving it against the real
app under uvicorn, with a worker thread that runs the submitted job."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select

from bench.tiny import save_tiny_llama
from slimforge.app.dashboard.router import STATIC
from slimforge.app.jobs.models import Job
from slimforge.app.main import create_app
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings
from slimforge.worker.runner import JobReporter, run_job
from tests.conftest import make_key

SETUP_HINT = "run `bash scripts/setup.sh --dev` (installs Debian's chromium and playwright)"

# The SVG namespace is a name, never fetched; any other absolute URL in the page's files would
# make the dashboard depend on the network.
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}


def test_page_and_assets_are_served_with_their_types_and_no_external_urls(api: TestClient) -> None:
    page = api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    srcs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert set(srcs) == {"/dashboard/app.js", "/dashboard/style.css"}
    for path, kind in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ]:
        r = api.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
        assert r.content == (STATIC / path.rsplit("/", 1)[1]).read_bytes()
    assert api.get("/dashboard/index.html").status_code == 404
    assert api.get("/dashboard/..%2Fmain.py").status_code == 404
    for file in STATIC.iterdir():
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", file.read_text()))
        assert urls <= ALLOWED_URLS, f"{file.name} refers to outside URLs: {urls - ALLOWED_URLS}"
        assert "@import" not in file.read_text()
    # The API's own routes are untouched and the dashboard stays out of the OpenAPI schema.
    assert api.get("/healthz").status_code == 200
    assert api.get("/docs").status_code == 200
    schema_paths = api.get("/openapi.json").json()["paths"]
    assert "/" not in schema_paths and not any(p.startswith("/dashboard") for p in schema_paths)
    assert api.get("/v1/jobs").status_code == 401  # the page is public, the API is not


# ---------------------------------------------------------------- the browser test


@dataclass
class Service:
    url: str
    key: str
    settings: Settings
    hold: threading.Event  # while set, the worker thread leaves queued jobs alone

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    """The real app under uvicorn on loopback, plus a thread that runs queued jobs."""
    upgrade(settings)
    key = make_key(settings, "acme")
    app = create_app(settings)
    factory = app.state.session_factory
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
        )
    )
    serving = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    serving.start()
    stop, hold = threading.Event(), threading.Event()

    def work() -> None:
        while not stop.is_set():
            if not hold.is_set():
                with factory() as session:
                    queued = session.scalars(select(Job.id).where(Job.status == "queued")).all()
                for job_id in queued:
                    run_job(settings=settings, session_factory=factory, job_id=job_id)
            stop.wait(0.2)

    worker = threading.Thread(target=work, name="worker", daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and serving.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Service(f"http://127.0.0.1:{port}", key, settings, hold)
    finally:
        stop.set()
        worker.join(timeout=60)
        server.should_exit = True
        serving.join(timeout=10)
        app.state.engine.dispose()


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(f"the Debian chromium browser is not installed: {SETUP_HINT}", pytrace=False)
    return path


def _artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SLIMFORGE_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_dashboard_in_chromium_submits_follows_and_downloads(
    service: Service,
    tmp_path: Path,
    text_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        from playwright.sync_api import Request, expect, sync_playwright
    except ImportError:
        pytest.fail(f"playwright is not installed: {SETUP_HINT}", pytrace=False)
    chromium = _chromium()
    # The first factorised block of a job waits for the test: what the page shows meanwhile
    # can only have come from the live event stream.
    paused, resume = threading.Event(), threading.Event()
    report = JobReporter.event

    def event(self: JobReporter, message: str, **kwargs: Any) -> None:
        report(self, message, **kwargs)
        if message.startswith("factorised block") and not paused.is_set():
            paused.set()
            resume.wait(60)

    monkeypatch.setattr(JobReporter, "event", event)
    model = save_tiny_llama(tmp_path / "tiny-llama")
    screenshot = _artifacts_dir(tmp_path) / "dashboard-finished-job.png"
    screenshot.unlink(missing_ok=True)
    outside: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = browser.new_context(
                accept_downloads=True, viewport={"width": 1400, "height": 1000}
            )
            page = context.new_page()

            def request(r: Request) -> None:
                if not r.url.startswith((service.url + "/", "blob:", "data:")):
                    outside.append(r.url)

            page.on("request", request)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(service.url + "/")

            # A wrong key is refused with the API's message; the right one opens the app.
            page.get_by_label("API key").fill("sf_wrong")
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#login-error")).not_to_be_empty()
            page.get_by_label("API key").fill(service.key)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("button", name="Log out")).to_be_visible()
            expect(page.locator("#f-method option")).to_have_count(4)
            assert page.evaluate("sessionStorage.getItem('slimforge.apiKey')") == service.key

            # The form is built from the method's schema, with its defaults.
            page.get_by_label("Method", exact=True).select_option("svd")
            expect(page.get_by_label("Rank Multiple")).to_have_value("8")
            expect(page.get_by_label("Whitening")).to_be_checked()
            page.get_by_label("Model path or Hub id").fill(str(model))
            page.get_by_label("Calibration path").fill(str(text_files["calibration"]))
            page.get_by_label("Calibration max tokens").fill("2048")
            page.get_by_label("Sequence length").fill("128")
            page.get_by_label("Evaluation path").fill(str(text_files["evaluation"]))
            page.get_by_label("Evaluation max tokens").fill("1024")

            # Bad input: the API's 4xx message is shown and nothing is queued.
            page.get_by_label("Target ratio").fill("1.5")
            page.get_by_role("button", name="Submit job").click()
            expect(page.locator("#submit-error")).to_contain_text("target.ratio")
            with service.api() as client:
                assert client.get("/v1/jobs").json()["items"] == []

            # A queued job (the worker is held) has a cancel button; cancelling ends it at once.
            page.get_by_label("Target ratio").fill("0.8")
            service.hold.set()
            page.get_by_role("button", name="Submit job").click()
            expect(page.locator("#submit-error")).to_be_empty()
            expect(page.locator("#d-id")).to_have_text(re.compile(r"^job_\w+$"))
            cancelled = page.locator("#d-id").inner_text()
            expect(page.locator("#d-status")).to_have_text("queued")
            page.get_by_role("button", name="Cancel job").click()
            expect(page.locator("#d-status")).to_have_text("cancelled")
            expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()

            # The status filter asks the API; "load more" follows the cursor (pages of 20).
            body = {
                "model": {"path": str(model)},
                "target": {"ratio": 0.8},
                "method": {"name": "svd"},
                "calibration": {"path": str(text_files["calibration"])},
            }
            with service.api() as client:
                for _ in range(20):
                    r = client.post("/v1/jobs", json=body)
                    assert r.status_code == 202, r.text
                    assert client.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code == 202
            status_filter = page.get_by_label("Status", exact=True)
            status_filter.select_option("cancelled")
            rows = page.locator("#job-rows tr")
            expect(rows).to_have_count(20)
            expect(page.locator(f'#job-rows tr[data-job="{cancelled}"]')).to_have_count(0)
            page.get_by_role("button", name="Load more").click()
            expect(rows).to_have_count(21)
            expect(page.locator(f'#job-rows tr[data-job="{cancelled}"]')).to_be_visible()
            expect(page.get_by_role("button", name="Load more")).to_be_hidden()
            status_filter.select_option("failed")
            expect(page.locator("#jobs-empty")).to_be_visible()
            status_filter.select_option("")
            expect(rows).to_have_count(20)
            service.hold.clear()

            # Live: the job stops after its first factorised block until the page has shown it
            # running, at that block, from the event stream alone.
            page.get_by_role("button", name="Submit job").click()
            expect(page.locator("#submit-error")).to_be_empty()
            expect(page.locator("#d-id")).not_to_have_text(cancelled)
            job_id = page.locator("#d-id").inner_text()
            assert job_id.startswith("job_")
            assert paused.wait(60), "the job did not reach its first block"
            expect(page.locator("#d-status")).to_have_text("running")
            expect(page.locator("#d-stage")).to_have_text("compressing")
            expect(page.locator("#d-progress-label")).to_have_text(
                re.compile(r"^compressing: factorised block \S+ \(1/2\)$")
            )
            expect(page.locator("#d-progress")).to_have_js_property("position", 0.5)
            expect(page.get_by_role("button", name="Cancel job")).to_be_visible()
            resume.set()
            expect(page.locator("#d-status")).to_have_text("succeeded", timeout=120_000)
            expect(page.locator("#d-events")).to_contain_text("stage storing started")
            expect(page.locator("#d-progress")).to_have_js_property("position", 1)
            expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
            row = page.locator(f'#job-rows tr[data-job="{job_id}"]')
            expect(row).to_contain_text("succeeded")

            # The metrics table has teacher and student perplexity (numbers), the chart too.
            ppl = page.locator('#d-metrics tr[data-metric="perplexity"] td')
            teacher, student = (float(ppl.nth(i).inner_text()) for i in (0, 1))
            assert teacher > 1 and student > 1
            params = page.locator('#d-metrics tr[data-metric="parameters"] td')
            before, after = (int(params.nth(i).inner_text().replace(",", "")) for i in (0, 1))
            assert after < before
            chart = page.get_by_role("img", name="Perplexity: teacher vs student")
            expect(chart).to_be_visible()
            assert chart.locator("rect").count() == 2

            # A download through the page's link (fetch with the key → blob) has the file's bytes.
            link = page.get_by_role("link", name="Download config.json")
            with page.expect_download() as info:
                link.click()
            download = info.value
            assert download.suggested_filename == "config.json"
            got = Path(download.path()).read_bytes()
            with service.api() as client:
                listing = client.get(f"/v1/jobs/{job_id}/artifacts").json()
            (entry,) = [f for f in listing["files"] if f["path"] == "config.json"]
            assert hashlib.sha256(got).hexdigest() == entry["sha256"]
            assert b'"lowrank_ranks"' in got

            status_filter.select_option("succeeded")
            expect(rows).to_have_count(1)
            expect(row).to_be_visible()
            page.screenshot(path=str(screenshot), full_page=True)

            # lillama + kd, parameters from the lillama schema: the loss curves are drawn.
            page.get_by_label("Method", exact=True).select_option("lillama")
            expect(page.get_by_label("Rank Strategy")).to_have_value("uniform")
            page.get_by_label("Max Steps Per Block").fill("3")
            page.get_by_label("Distillation (kd) tokens").fill("2048")
            page.get_by_role("button", name="Submit job").click()
            expect(page.locator("#submit-error")).to_be_empty()
            expect(page.locator("#d-id")).not_to_have_text(job_id)
            expect(page.locator("#d-status")).to_have_text("succeeded", timeout=120_000)
            lillama = page.get_by_role("img", name="Lillama: loss per block")
            expect(lillama.locator("polyline")).to_have_count(2)
            expect(lillama.locator("circle")).to_have_count(4)  # 2 blocks, before and after
            kd = page.get_by_role("img", name="Distillation (kd) loss")
            expect(kd.locator("polyline")).to_have_count(1)
            assert kd.locator("circle").count() >= 2
            expect(
                page.locator('#d-metrics tr[data-metric="perplexity before kd"]')
            ).to_be_visible()
            page.locator("#detail").screenshot(
                path=str(screenshot.with_name("dashboard-lillama-kd.png"))
            )

            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_label("API key")).to_be_visible()
            assert page.evaluate("sessionStorage.getItem('slimforge.apiKey')") is None
            assert not errors, errors
        finally:
            resume.set()  # never leave the worker thread waiting
            browser.close()

    assert not outside, f"the page fetched from outside the service: {outside}"
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000, len(data)
