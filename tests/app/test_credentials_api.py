"""Hub credentials: write-only, encrypted at rest, per tenant; jobs that push need one."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from slimforge.app.credentials.crypto import SecretBox
from slimforge.app.credentials.models import HubCredential
from slimforge.app.db import make_engine, make_session_factory
from slimforge.app.settings import Settings
from tests.app.test_jobs_api import body

TOKEN = "hf_secretTOKENvalue1234"


def stored_rows(settings: Settings) -> list[HubCredential]:
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(HubCredential)))
    finally:
        engine.dispose()


def test_token_is_write_only_encrypted_and_per_tenant(
    api: TestClient, auth, settings: Settings
) -> None:
    acme, other = auth("acme"), auth("other")
    assert api.get("/v1/credentials/hub", headers=acme).json() == {
        "configured": False,
        "token_hint": None,
        "updated_at": None,
    }
    r = api.put("/v1/credentials/hub", json={"token": TOKEN}, headers=acme)
    assert r.status_code == 200, r.text
    assert r.json()["configured"] and r.json()["token_hint"] == "…1234"
    assert TOKEN not in r.text
    status = api.get("/v1/credentials/hub", headers=acme)
    assert status.json()["configured"] and TOKEN not in status.text
    assert not api.get("/v1/credentials/hub", headers=other).json()["configured"]
    (row,) = stored_rows(settings)
    assert TOKEN not in row.token_encrypted  # encrypted at rest
    assert SecretBox(settings).decrypt(row.token_encrypted) == TOKEN
    # Another key cannot read it, and says what to do.
    wrong = Settings(home=settings.home, secret_key="another key")
    with pytest.raises(ValueError, match="set the credential again"):
        SecretBox(wrong).decrypt(row.token_encrypted)
    assert api.delete("/v1/credentials/hub", headers=other).status_code == 404
    assert api.delete("/v1/credentials/hub", headers=acme).status_code == 204
    assert stored_rows(settings) == []
    assert api.delete("/v1/credentials/hub", headers=acme).status_code == 404


@pytest.mark.parametrize(
    "token", ["", "short", "has space in it", "x" * 501], ids=["empty", "short", "space", "long"]
)
def test_bad_tokens_are_422(api: TestClient, auth, token: str) -> None:
    r = api.put("/v1/credentials/hub", json={"token": token}, headers=auth())
    assert r.status_code == 422 and "token" in r.text


def test_push_needs_a_token_and_a_valid_repo(
    api: TestClient, auth, text_files: dict[str, Path]
) -> None:
    h = auth()
    output = {"hub_repo": "acme/smollm2-slim"}
    r = api.post("/v1/jobs", json=body(text_files, output=output), headers=h)
    assert r.status_code == 422 and "PUT /v1/credentials/hub" in r.json()["error"]["message"]
    api.put("/v1/credentials/hub", json={"token": TOKEN}, headers=h)
    for repo in ("no-namespace", "a/b/c", "acme/bad--name", "acme/../x", "-acme/x"):
        bad = api.post("/v1/jobs", json=body(text_files, output={"hub_repo": repo}), headers=h)
        assert bad.status_code == 422, repo
    ok = api.post("/v1/jobs", json=body(text_files, output=output), headers=h)
    assert ok.status_code == 202, ok.text
    assert ok.json()["request"]["output"] == {
        "hub_repo": "acme/smollm2-slim",
        "private": True,
        "revision": "main",
        "commit_message": None,
        "dtype": None,  # the source's precision
        "formats": ["safetensors"],  # resolved at submit: not a GGUF input
        "gguf_type": None,
    }
    # Only a job that failed while publishing can be published again.
    again = api.post(f"/v1/jobs/{ok.json()['id']}/publish", headers=h)
    assert again.status_code == 409 and "failed while publishing" in again.text
    plain = api.post("/v1/jobs", json=body(text_files), headers=h).json()["id"]
    none = api.post(f"/v1/jobs/{plain}/publish", headers=h)
    assert none.status_code == 409 and "no output.hub_repo" in none.text
    assert api.post(f"/v1/jobs/{plain}/publish", headers=auth("other")).status_code == 404
