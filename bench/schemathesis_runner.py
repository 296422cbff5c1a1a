"""The schemathesis run of the API's OpenAPI schema, in process: used by
``tests/app/test_schemathesis.py`` (few examples) and ``bench/schemathesis_run.py`` (many).

Every operation gets a bounded, derandomized set of generated requests (valid and invalid
data), sent with a valid API key; each answer must not be a 5xx and must match the status
codes, content types and bodies the schema declares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core.failures import Failure, FailureGroup, ServerError
from schemathesis.core.result import Ok

from slimforge.app.auth.service import create_api_key
from slimforge.app.db import session_scope
from slimforge.app.main import create_app
from slimforge.app.migrate import upgrade
from slimforge.app.settings import Settings

__all__ = ["OperationResult", "build_app", "run_schema"]

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"
TENANT = "schemathesis"
# A job the API accepts (a Hub model is not read at submit): generated bodies almost never are.
VALID_JOB = {
    "model": {"id": "org/model"},
    "target": {"ratio": 0.8},
    "method": {"name": "svd"},
    "calibration": {"synthetic": True},
}


def _checks() -> list[Any]:
    return [
        schemathesis.checks.not_a_server_error,
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.content_type_conformance,
        schemathesis.checks.response_schema_conformance,
    ]


@dataclass
class OperationResult:
    label: str
    examples: int = 0
    successes: int = 0  # 2xx answers
    server_errors: int = 0  # answers with a 5xx status
    violations: int = 0  # other answers that break the schema (status, content type, body)
    failures: dict[str, str] = field(default_factory=dict)  # first message per failure title


def build_app(home: Path) -> tuple[FastAPI, dict[str, str]]:
    """A fresh app on SQLite under ``home`` and the Authorization header of a tenant's key."""
    config = Settings(
        home=home,
        local_roots=[home, CORPUS],
        rate_limit_per_minute=0,  # thousands of requests with one key: no 429s
    )
    upgrade(config)
    app = create_app(config)
    with session_scope(app.state.session_factory) as session:
        key = create_api_key(session, tenant_name=TENANT)
    return app, {"Authorization": f"Bearer {key}"}


def _known_cases(operation: Any, known: dict[str, str]) -> list[Any]:
    """Requests about an existing job (random ids only ever reach the 404 branch)."""
    if operation.label == "POST /v1/jobs":
        return [operation.Case(body=VALID_JOB, media_type="application/json")]
    names = re.findall(r"{(\w+)}", operation.path)
    if names and all(n in known for n in names):
        return [operation.Case(path_parameters={n: known[n] for n in names})]
    return []


def _probe(
    operation: Any, headers: dict[str, str], examples: int, known: dict[str, str]
) -> OperationResult:
    result = OperationResult(operation.label)
    checks = _checks()
    strategies = [operation.as_strategy(mode) for mode in schemathesis.GenerationMode]

    def send(case: Any) -> None:
        response = case.call(headers=dict(headers))
        result.examples += 1
        result.successes += response.status_code < 300
        try:
            case.validate_response(response, checks=checks, headers=dict(headers))
        except FailureGroup as group:
            found: list[Failure] = list(group.exceptions)
            if any(isinstance(f, ServerError) for f in found):
                result.server_errors += 1
            else:
                result.violations += 1
            for failure in found:
                message = f"{case.method} {case.formatted_path} -> {response.status_code}: "
                result.failures.setdefault(failure.title, message + failure.message[:300])

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def probe(case: Any) -> None:
        send(case)

    for case in _known_cases(operation, known):
        send(case)
    probe()
    return result


def run_schema(app: FastAPI, headers: dict[str, str], *, examples: int) -> list[OperationResult]:
    """Up to ``examples`` generated requests per operation (valid and invalid data mixed);
    derandomized, so the same requests every run."""
    with TestClient(app) as client:
        job = client.post("/v1/jobs", headers=headers, json=VALID_JOB).json()
    known = {"job_id": job["id"], "namespace": TENANT, "name": job["id"], "revision": "main"}
    known["path"] = "config.json"
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    results = []
    for item in schema.get_all_operations():
        assert isinstance(item, Ok), item  # the schema itself is valid
        results.append(_probe(item.ok(), headers, examples, known))
    return results
