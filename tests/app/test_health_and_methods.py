"""Probes and the method catalogue."""

from __future__ import annotations

from fastapi.testclient import TestClient

from slimforge.app.main import create_app
from slimforge.app.settings import Settings


def test_healthz_and_readyz(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_reports_an_unreachable_broker_and_database(tmp_path) -> None:
    settings = Settings(
        home=tmp_path,
        broker_url="redis://127.0.0.1:1/0",
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    app = create_app(settings)
    with TestClient(app) as client:
        r = client.get("/readyz")
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["checks"]["broker"] == "unreachable"
    assert r.json()["checks"]["database"].startswith("unreachable")


def test_database_outage_is_a_503_not_a_500(tmp_path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(settings)) as client:
        r = client.get("/v1/jobs", headers={"Authorization": "Bearer sf_x"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "database is unavailable" in r.json()["error"]["message"]


def test_methods_lists_each_method_with_its_schema(api: TestClient, auth) -> None:
    methods = api.get("/v1/methods", headers=auth()).json()
    svd = next(m for m in methods if m["name"] == "svd")
    assert "SVD-LLM" in svd["description"]
    props = svd["parameters_schema"]["properties"]
    assert props["whitening"]["default"] is True
    assert svd["parameters_schema"]["additionalProperties"] is False
    assert {m["name"] for m in methods} == {"auto", "svd", "lillama", "minitron"}
    minitron = next(m for m in methods if m["name"] == "minitron")
    assert "standard architecture" in minitron["description"]
    assert "axes" in minitron["parameters_schema"]["properties"]


def test_each_summary_is_the_whole_opening_paragraph(api: TestClient, auth) -> None:
    for method in api.get("/v1/methods", headers=auth()).json():
        opening = method["description"].split("\n\n")[0]
        assert method["summary"] == " ".join(opening.split()), method["name"]
        assert method["summary"].endswith("."), method["summary"]


def test_openapi_documents_the_method_union(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    job_create = schema["components"]["schemas"]["JobCreate"]
    assert "method" in job_create["required"]
    assert "SvdConfig" in schema["components"]["schemas"]
    assert "MinitronConfig" in schema["components"]["schemas"]
    assert "distill" in job_create["properties"] and "KdConfig" in schema["components"]["schemas"]


def test_an_exhausted_connection_pool_is_a_503_after_the_pool_timeout(
    postgres_url: str, tmp_path
) -> None:
    """More concurrent requests than pooled connections: the extra ones wait
    db_pool_timeout_seconds, then get 503 with Retry-After (not a hang, not a 500)."""
    from bench.services import fresh_database
    from slimforge.app.migrate import upgrade
    from tests.conftest import make_key

    settings = Settings(
        home=tmp_path,
        database_url=fresh_database(postgres_url, "pool_exhausted"),
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout_seconds=0.5,
    )
    upgrade(settings)
    key = make_key(settings, "acme")
    app = create_app(settings)
    with TestClient(app) as client:
        held = app.state.engine.connect()  # the pool's only connection, taken
        try:
            r = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        finally:
            held.close()
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "busy" in r.json()["error"]["message"]
        ok = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    app.state.engine.dispose()
