"""Alembic migrations from an empty database, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from bench.services import fresh_database
from slimforge.app.migrate import downgrade, upgrade
from slimforge.app.models import Base
from slimforge.app.settings import Settings


def _check_schema_matches_models(url: str) -> None:
    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    for table in Base.metadata.sorted_tables:
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name
    engine.dispose()


def _round_trip(settings: Settings) -> None:
    upgrade(settings)
    _check_schema_matches_models(settings.database_url)
    downgrade(settings, "base")
    engine = sa.create_engine(settings.database_url)
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(settings)
    _check_schema_matches_models(settings.database_url)


def test_migrations_on_sqlite(tmp_path) -> None:
    _round_trip(Settings(home=tmp_path))


def test_migrations_on_postgresql(tmp_path, postgres_url) -> None:
    url = fresh_database(postgres_url, "migrations")
    _round_trip(Settings(home=tmp_path, database_url=url))
