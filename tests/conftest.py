"""Shared fixtures: settings in a temporary folder, the API under test, API keys, text files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from slimforge.app.auth.service import create_api_key
from slimforge.app.db import make_engine, make_session_factory, session_scope
from slimforge.app.main import create_app
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "corpus"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", local_roots=[tmp_path, CORPUS])


@pytest.fixture
def text_files(tmp_path: Path) -> dict[str, Path]:
    calib = tmp_path / "calib.txt"
    calib.write_text((CORPUS / "calibration.txt").read_text()[:40000])
    evaluation = tmp_path / "eval.txt"
    evaluation.write_text((CORPUS / "evaluation.txt").read_text()[:20000])
    return {"calibration": calib, "evaluation": evaluation}


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A tiny random Llama saved as a model folder (``bench.tiny.save_tiny_llama``)."""
    from bench.tiny import save_tiny_llama  # imports torch: only for the tests that use it

    return save_tiny_llama(tmp_path / "tiny-llama")


def make_key(settings: Settings, tenant: str) -> str:
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return create_api_key(session, tenant_name=tenant)
    finally:
        engine.dispose()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    upgrade(settings)
    app = create_app(settings)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


@pytest.fixture
def auth(api: TestClient, settings: Settings) -> Callable[[str], dict[str, str]]:
    """``auth("tenant")`` → headers with a fresh key of that tenant."""

    def headers(tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {make_key(settings, tenant)}"}

    return headers


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on loopback for the whole session (its admin URL)."""
    from bench.services import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server on loopback for the whole session."""
    from bench.services import redis_server

    with redis_server() as url:
        yield url
