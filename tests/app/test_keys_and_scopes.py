"""API key scopes (read < submit < admin) on every route, the /v1/keys routes (shown once,
listing, revocation, tenant isolation), the admin CLI and the 0005 migration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from slimforge.app.auth.models import ApiKey
from slimforge.app.auth.service import authenticate, create_api_key, hash_key
from slimforge.app.db import make_engine, make_session_factory, session_scope
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings
from slimforge.cli import main as cli_main
from tests.conftest import CORPUS

TENANT = "acme"
JOB = {
    "model": {"id": "org/model"},
    "target": {"ratio": 0.8},
    "method": {"name": "svd"},
    "calibration": {"synthetic": True},
}
MISSING = "0" * 32  # a job or key id that does not exist: 404 once past the scope check
LEVELS = ["none", "read", "submit", "admin"]  # "none": a row whose scopes grant nothing

# Every authenticated route: (method, path, JSON body or None, the minimal scope).
ROUTES: list[tuple[str, str, dict | None, str]] = [
    ("GET", "/v1/jobs", None, "read"),
    ("GET", f"/v1/jobs/{MISSING}", None, "read"),
    ("GET", f"/v1/jobs/{MISSING}/events", None, "read"),
    ("GET", f"/v1/jobs/{MISSING}/artifacts", None, "read"),
    ("GET", f"/v1/jobs/{MISSING}/artifacts/config.json", None, "read"),
    ("HEAD", f"/v1/jobs/{MISSING}/artifacts/config.json", None, "read"),
    ("GET", f"/v1/jobs/{MISSING}/webhook-deliveries", None, "read"),
    ("GET", "/v1/methods", None, "read"),
    ("GET", "/v1/credentials/hub", None, "read"),
    ("GET", "/v1/webhooks/default", None, "read"),
    ("GET", f"/api/models/{TENANT}/{MISSING}", None, "read"),
    ("GET", f"/api/models/{TENANT}/{MISSING}/revision/main", None, "read"),
    ("GET", f"/api/models/{TENANT}/{MISSING}/tree/main", None, "read"),
    ("GET", f"/api/models/{TENANT}/{MISSING}/tree/main/sub", None, "read"),
    ("GET", f"/{TENANT}/{MISSING}/resolve/main/config.json", None, "read"),
    ("HEAD", f"/{TENANT}/{MISSING}/resolve/main/config.json", None, "read"),
    ("POST", "/v1/jobs", JOB, "submit"),
    ("POST", f"/v1/jobs/{MISSING}/cancel", None, "submit"),
    ("POST", f"/v1/jobs/{MISSING}/publish", None, "submit"),
    ("DELETE", f"/v1/jobs/{MISSING}", None, "submit"),
    ("PUT", "/v1/credentials/hub", {"token": "hf_abcdefghijkl"}, "admin"),
    ("DELETE", "/v1/credentials/hub", None, "admin"),
    ("PUT", "/v1/webhooks/default", {"url": "not a url"}, "admin"),
    ("DELETE", "/v1/webhooks/default", None, "admin"),
    ("POST", "/v1/webhooks/secret", None, "admin"),
    ("POST", "/v1/keys", {"scopes": ["read"]}, "admin"),
    ("GET", "/v1/keys", None, "admin"),
    ("DELETE", f"/v1/keys/{MISSING}", None, "admin"),
]
UNAUTHENTICATED_ROUTES = {"/", "/healthz", "/readyz", "/metrics"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Many requests with few keys: no rate limit.
    return Settings(home=tmp_path / "home", local_roots=[tmp_path, CORPUS], rate_limit_per_minute=0)


def _key(settings: Settings, tenant: str = TENANT, scopes: list[str] | None = None, **kw) -> str:
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return create_api_key(session, tenant_name=tenant, scopes=scopes, **kw)
    finally:
        engine.dispose()


@pytest.fixture
def keys(api: TestClient, settings: Settings) -> dict[str, dict[str, str]]:
    """Authorization headers of a key at each level (``none``: a hand-edited row, no scope)."""
    out = {level: _key(settings, scopes=[level]) for level in ("read", "submit", "admin")}
    out["none"] = _key(settings, scopes=["read"])
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.update(ApiKey).where(ApiKey.key_hash == hash_key(out["none"])).values(scopes="")
        )
    engine.dispose()
    return {level: {"Authorization": f"Bearer {k}"} for level, k in out.items()}


def _call(api: TestClient, method: str, path: str, body: dict | None, headers: dict[str, str]):
    return api.request(method, path, json=body, headers=headers)


def test_the_table_covers_every_authenticated_route(api: TestClient) -> None:
    """Every operation of the OpenAPI schema (HEAD routes are GET's twins) is in ROUTES."""
    paths = api.get("/openapi.json").json()["paths"]
    documented = {
        (method.upper(), template)
        for template, operations in paths.items()
        if template not in UNAUTHENTICATED_ROUTES
        for method in operations
    }
    tabled = set()
    for method, path, _, _ in ROUTES:
        if method == "HEAD":
            continue
        templates = [
            t
            for m, t in documented
            if m == method and re.fullmatch(re.sub(r"{\w+}", "[^/]+", t), path)
        ]
        assert len(templates) == 1, (method, path, templates)
        tabled.add((method, templates[0]))
    assert documented == tabled


@pytest.mark.parametrize(("method", "path", "body", "minimal"), ROUTES)
def test_each_scope_can_do_exactly_what_it_should(
    api: TestClient, keys: dict[str, dict[str, str]], method, path, body, minimal
) -> None:
    for level in LEVELS:
        r = _call(api, method, path, body, keys[level])
        allowed = LEVELS.index(level) >= LEVELS.index(minimal)
        if allowed:
            assert r.status_code != 403, (level, r.status_code, r.text)
            assert r.status_code < 500 and r.status_code != 401, (level, r.text)
        else:
            assert r.status_code == 403, (level, r.status_code, r.text)
            if method == "HEAD":
                continue
            body_json = r.json()
            if path.startswith("/v1/"):
                assert body_json["error"]["code"] == "forbidden"
                message = body_json["error"]["message"]
                assert body_json["error"]["details"]["required_scope"] == minimal
            else:  # the Hub-compatible routes answer the Hub's way
                message = body_json["error"]
                assert "lacks" in r.headers["x-error-message"]
            assert f"lacks the '{minimal}' scope" in message


def test_submit_key_submits_and_cancels_but_read_key_only_reads(
    api: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    r = api.post("/v1/jobs", json=JOB, headers=keys["submit"])
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert api.get(f"/v1/jobs/{job_id}", headers=keys["read"]).status_code == 200
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=keys["read"]).status_code == 403
    r = api.post(f"/v1/jobs/{job_id}/cancel", headers=keys["submit"])
    assert r.status_code == 202, r.text
    assert api.get("/v1/jobs", headers=keys["read"]).json()["items"][0]["id"] == job_id


def test_keys_created_without_scopes_are_admin(api: TestClient, settings: Settings) -> None:
    legacy = {"Authorization": f"Bearer {_key(settings)}"}  # as the CLI and make_key always did
    listed = api.get("/v1/keys", headers=legacy)
    assert listed.status_code == 200, listed.text
    assert [k["scopes"] for k in listed.json()["items"]] == [["admin"]]
    assert api.post("/v1/webhooks/secret", headers=legacy).status_code == 201
    for body in ({}, {"scopes": []}):
        r = api.post("/v1/keys", json=body, headers=legacy)
        assert r.status_code == 201 and r.json()["scopes"] == ["admin"], r.text


def test_create_shows_the_key_once_and_listing_never(api: TestClient, auth) -> None:
    admin = auth(TENANT)
    r = api.post("/v1/keys", json={"scopes": ["submit", "read"], "name": "ci"}, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith("sf_") and created["prefix"] == key[:10]
    assert created["scopes"] == ["read", "submit"] and created["name"] == "ci"
    assert created["revoked_at"] is None and created["created_at"]
    new = {"Authorization": f"Bearer {key}"}
    assert api.get("/v1/jobs", headers=new).status_code == 200
    assert api.post("/v1/jobs", json=JOB, headers=new).status_code == 202
    assert api.get("/v1/keys", headers=new).status_code == 403  # submit is not admin

    listed = api.get("/v1/keys", headers=admin)
    assert listed.status_code == 200
    assert key not in listed.text and hash_key(key) not in listed.text
    items = {k["id"]: k for k in listed.json()["items"]}
    assert len(items) == 2
    assert set(items[created["id"]]) == {
        "id",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "revoked_at",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["owner"]},
        {"scopes": "admin"},
        {"name": ""},
        {"name": "x" * 101},
        {"name": "line\nbreak"},
        {"scopes": ["read"], "key": "sf_mine"},
    ],
)
def test_create_rejects_bad_input(api: TestClient, auth, body) -> None:
    r = api.post("/v1/keys", json=body, headers=auth())
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"


def test_revoke_is_immediate_and_listed(api: TestClient, auth) -> None:
    admin = auth(TENANT)
    created = api.post("/v1/keys", json={"scopes": ["read"]}, headers=admin).json()
    victim = {"Authorization": f"Bearer {created['key']}"}
    assert api.get("/v1/jobs", headers=victim).status_code == 200
    assert api.delete(f"/v1/keys/{created['id']}", headers=admin).status_code == 204
    r = api.get("/v1/jobs", headers=victim)
    assert r.status_code == 401
    assert "invalid or revoked" in r.json()["error"]["message"]
    # Hub clients too.
    assert api.get(f"/api/models/{TENANT}/x", headers=victim).status_code == 401
    listed = {k["id"]: k for k in api.get("/v1/keys", headers=admin).json()["items"]}
    assert listed[created["id"]]["revoked_at"] is not None
    # Revoking again changes nothing.
    assert api.delete(f"/v1/keys/{created['id']}", headers=admin).status_code == 204


def test_revoking_the_calling_key_is_allowed(api: TestClient, auth) -> None:
    admin = auth(TENANT)
    own_id = api.get("/v1/keys", headers=admin).json()["items"][0]["id"]
    assert api.delete(f"/v1/keys/{own_id}", headers=admin).status_code == 204
    assert api.get("/v1/keys", headers=admin).status_code == 401


def test_other_tenants_keys_are_invisible(api: TestClient, auth) -> None:
    mine, theirs = auth("acme"), auth("globex")
    my_key = api.post("/v1/keys", json={"name": "mine"}, headers=mine).json()
    their_listing = api.get("/v1/keys", headers=theirs).json()["items"]
    assert my_key["id"] not in {k["id"] for k in their_listing}
    assert len(their_listing) == 1
    r = api.delete(f"/v1/keys/{my_key['id']}", headers=theirs)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {my_key['key']}"}).is_success


def test_principal_carries_effective_scopes(api: TestClient, settings: Settings) -> None:
    key = _key(settings, scopes=["submit"])
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        principal = authenticate(session, authorization=f"Bearer {key}")
    engine.dispose()
    assert principal.scopes == {"read", "submit"}
    assert principal.has_scope("read") and not principal.has_scope("admin")


def test_cli_create_key_with_scopes_and_revoke(
    api: TestClient, settings: Settings, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SLIMFORGE_HOME", str(settings.home))
    assert (
        cli_main(["admin", "create-key", "--tenant", TENANT, "--scopes", "read", "--name", "ro"])
        == 0
    )
    key = capsys.readouterr().out.strip()
    headers = {"Authorization": f"Bearer {key}"}
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    assert api.post("/v1/jobs", json=JOB, headers=headers).status_code == 403

    assert cli_main(["admin", "create-key", "--tenant", TENANT]) == 0
    admin = {"Authorization": f"Bearer {capsys.readouterr().out.strip()}"}
    listed = {k["name"]: k for k in api.get("/v1/keys", headers=admin).json()["items"]}
    assert listed["ro"]["scopes"] == ["read"] and listed[None]["scopes"] == ["admin"]

    assert cli_main(["admin", "create-key", "--tenant", TENANT, "--scopes", "read,root"]) == 2
    assert "unknown scope" in capsys.readouterr().err

    assert cli_main(["admin", "revoke-key", "--id", listed["ro"]["id"]]) == 0
    assert api.get("/v1/jobs", headers=headers).status_code == 401
    assert cli_main(["admin", "revoke-key", "--id", MISSING]) == 1


def test_migration_makes_existing_keys_admin(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    upgrade(settings, "0004")
    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'old', :now)"),
            {"now": "2026-01-01 00:00:00"},
        )
        conn.execute(
            sa.text(
                "INSERT INTO api_keys (id, tenant_id, prefix, key_hash, created_at) "
                "VALUES ('k1', 't1', 'sf_old', :h, :now)"
            ),
            {"h": hash_key("sf_old-key"), "now": "2026-01-01 00:00:00"},
        )
    engine.dispose()
    upgrade(settings)
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        row = session.get(ApiKey, "k1")
        assert row is not None and row.scopes == "admin" and row.name is None
        principal = authenticate(session, authorization="Bearer sf_old-key")
    engine.dispose()
    assert principal.tenant_name == "old" and principal.scopes == {"read", "submit", "admin"}
