"""The settings of a throw-away deployment for the integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.services import fresh_database
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings


def migrated_settings(
    tmp_path: Path, *, postgres_url: str, redis_url: str, database: str, **extra: Any
) -> Settings:
    """Settings on a fresh PostgreSQL database ``database`` (migrated) and ``redis_url``, with
    home and local roots in ``tmp_path``; ``extra`` sets any other field."""
    settings = Settings(
        home=tmp_path / "home",
        database_url=fresh_database(postgres_url, database),
        broker_url=redis_url,
        local_roots=[tmp_path],
        **extra,
    )
    upgrade(settings)
    return settings
