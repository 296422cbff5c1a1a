"""Property-based run of the whole OpenAPI schema with schemathesis, in process.

Every operation gets a bounded, derandomized set of generated requests (valid and invalid
data), sent with a valid API key; each answer must not be a 5xx and must match the status
codes, content types and bodies the schema declares. Jobs it submits stay queued: the
file-system broker only stores the message, no worker runs. ``bench/schemathesis_run.py`` runs
the same check (``bench/schemathesis_runner.py``) with more examples and prints a table.

(One test that walks the operations itself: ``schemathesis.pytest.from_fixture`` fails on
pytest 9, whose nodes have no ``_nodeid``.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from bench.schemathesis_runner import build_app, run_schema

EXAMPLES = int(os.environ.get("SLIMFORGE_SCHEMATHESIS_EXAMPLES", "10"))


@pytest.fixture
def api_app(tmp_path: Path) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    app, headers = build_app(tmp_path / "home")
    yield app, headers
    app.state.engine.dispose()


def test_api_conforms_to_its_schema(api_app: tuple[FastAPI, dict[str, str]]) -> None:
    results = run_schema(*api_app, examples=EXAMPLES)
    assert len(results) >= 20  # every documented operation was exercised
    assert all(r.examples > 0 for r in results)
    problems = [
        f"{r.label}: {title}: {message}" for r in results for title, message in r.failures.items()
    ]
    assert not problems, "\n".join(problems)
