"""One tenant never sees or touches another's jobs, files, credentials or webhooks, on every
route: a second tenant's key gets the same answer as for something that does not exist."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update

from slimforge.app.db import session_scope, utcnow
from slimforge.app.jobs.models import Job
from tests.app.test_artifacts_api import _fake_artifact, _job

HUB_TOKEN = "hf_acmeSecretToken9876"


def _acme_job_with_artifact(api: TestClient, h: dict[str, str], tmp_path: Path) -> str:
    job_id = _job(api, h, tmp_path)
    _fake_artifact(api, api.app.state.settings, job_id)
    with session_scope(api.app.state.session_factory) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status="succeeded", finished_at=utcnow())
        )
    return job_id


def _body(text: str) -> object:
    """The error body without its request id (different for every request)."""
    data = json.loads(text)
    if isinstance(data.get("error"), dict):
        data["error"].pop("request_id", None)
    return data


def test_every_route_hides_other_tenants(api: TestClient, auth, tmp_path: Path) -> None:
    acme, other = auth("acme"), auth("other")
    job = _acme_job_with_artifact(api, acme, tmp_path)
    assert (
        api.put("/v1/credentials/hub", json={"token": HUB_TOKEN}, headers=acme).status_code == 200
    )
    # The owner sees everything ...
    for path in (
        f"/v1/jobs/{job}",
        f"/v1/jobs/{job}/events",
        f"/v1/jobs/{job}/artifacts",
        f"/v1/jobs/{job}/artifacts/config.json",
        f"/v1/jobs/{job}/webhook-deliveries",
        f"/api/models/acme/{job}",
        f"/acme/{job}/resolve/main/config.json",
    ):
        assert api.get(path, headers=acme).status_code == 200, path
    # ... the other tenant gets exactly what a missing job gets.
    reads = [
        f"/v1/jobs/{job}",
        f"/v1/jobs/{job}/events",
        f"/v1/jobs/{job}/events?stream=true",
        f"/v1/jobs/{job}/artifacts",
        f"/v1/jobs/{job}/artifacts/config.json",
        f"/v1/jobs/{job}/webhook-deliveries",
        f"/api/models/acme/{job}",
        f"/api/models/acme/{job}/tree/main",
        f"/acme/{job}/resolve/main/config.json",
        f"/api/models/other/{job}",  # its own namespace does not reach acme's job either
    ]
    for path in reads:
        mine = api.get(path, headers=other)
        missing = api.get(path.replace(job, "job_doesnotexist"), headers=other)
        assert mine.status_code == missing.status_code == 404, path
        # The same body, too: nothing tells "someone else's" from "does not exist".
        assert _body(mine.text.replace(job, "job_doesnotexist")) == _body(missing.text), path
    for method, path in (
        ("POST", f"/v1/jobs/{job}/cancel"),
        ("POST", f"/v1/jobs/{job}/publish"),
        ("DELETE", f"/v1/jobs/{job}"),
    ):
        assert api.request(method, path, headers=other).status_code == 404, (method, path)
    # Listings are per tenant; credentials are per tenant and never shown.
    assert api.get("/v1/jobs", headers=other).json()["items"] == []
    status = api.get("/v1/credentials/hub", headers=other).json()
    assert status["configured"] is False and HUB_TOKEN not in str(status)
    assert api.delete("/v1/credentials/hub", headers=other).status_code == 404
    assert api.get("/v1/credentials/hub", headers=acme).json()["configured"] is True
    # Nothing the other tenant did changed acme's job.
    assert api.get(f"/v1/jobs/{job}", headers=acme).json()["status"] == "succeeded"
    assert api.get(f"/v1/jobs/{job}/artifacts/config.json", headers=acme).status_code == 200
