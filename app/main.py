"""The FastAPI application factory."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from slimforge.app.artifacts.router import router as artifacts_router
from slimforge.app.artifacts.storage import make_store
from slimforge.app.auth.router import router as keys_router
from slimforge.app.credentials.router import router as credentials_router
from slimforge.app.dashboard.router import router as dashboard_router
from slimforge.app.db import make_engine, make_session_factory
from slimforge.app.errors import AppError
from slimforge.app.health.router import router as health_router
from slimforge.app.hubcompat.router import router as hubcompat_router
from slimforge.app.jobs.router import router as jobs_router
from slimforge.app.limits.middleware import RequestLimitsMiddleware
from slimforge.app.limits.slots import SessionSlots
from slimforge.app.methods.router import router as methods_router
from slimforge.app.observability import current_request_id, install_observability
from slimforge.app.queue import make_celery_app
from slimforge.app.settings import Settings
from slimforge.app.webhooks.router import router as webhooks_router
from slimforge.compression.methods import available_methods

__all__ = ["create_app"]

log = logging.getLogger("slimforge.api")


def _error(status: int, code: str, message: str, details: Any = None, headers=None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    if (request_id := current_request_id()) is not None:
        body["error"]["request_id"] = request_id
        headers = {**(headers or {}), "X-Request-ID": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    # ("body", "target", "ratio") -> "target.ratio"; drop pydantic's union-member tags.
    parts = [str(p) for p in loc if p not in ("body",) and not str(p).startswith("function-")]
    return ".".join(parts) or "body"


def _missing_hint(field: str) -> str:
    """What to write for a missing top-level field of ``POST /v1/jobs`` ('' if no hint)."""
    if field == "method":
        names = ", ".join(available_methods())
        return f'give {{"name": ...}} with one of: {names} (GET /v1/methods lists their parameters)'
    return {
        "model": 'give {"path": "<model folder on the server>"} or {"id": "<org/name on the Hub>"}',
        "target": 'give {"ratio": 0.8} (the share of parameters to keep) or {"params": <count>}',
    }.get(field, "")


def _validation_message(
    exc: RequestValidationError, *, job_body: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    problems = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "syntax error")
            position = err.get("loc", ("body", "?"))[-1]
            problems.append(
                {"field": "body", "message": f"not valid JSON ({reason} at character {position})"}
            )
            continue
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        loc = tuple(err.get("loc", ()))
        if job_body and err.get("type") == "missing" and len(loc) == 2 and loc[0] == "body":
            hint = _missing_hint(str(loc[1]))
            msg = f"{msg}: {hint}" if hint else msg
        problems.append({"field": _location(tuple(err.get("loc", ()))), "message": msg})
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    return f"invalid request: {summary}", problems


def create_app(settings: Settings) -> FastAPI:
    """Build the API around ``settings``: its own engine, session factory and queue producer."""
    settings.ensure_dirs()
    app = FastAPI(
        title="slimforge",
        version="0.1.0",
        description="Compression as a service for language models: submit a model, a target "
        "size and a method; get a smaller model, its metrics and its files back.",
    )
    engine = make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    # As many request slots as pooled connections (see slimforge.app.limits.slots).
    app.state.session_slots = SessionSlots(
        size=settings.db_pool_size + settings.db_max_overflow,
        timeout=settings.db_pool_timeout_seconds,
    )
    app.state.celery = make_celery_app(settings)
    app.state.store = make_store(settings)
    app.add_middleware(RequestLimitsMiddleware, settings=settings)  # rate + body size

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        job_body = request.method == "POST" and request.url.path == "/v1/jobs"
        message, problems = _validation_message(exc, job_body=job_body)
        return _error(422, "invalid_input", message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail), headers=exc.headers)

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return _error(
            503,
            "unavailable",
            "the database is unavailable; retry shortly",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _db_busy(_: Request, exc: SQLAlchemyTimeoutError) -> JSONResponse:
        # Every pooled connection is in use: more requests than this process can serve now.
        log.warning("database pool exhausted: %s", exc)
        return _error(
            503, "unavailable", "the service is busy; retry shortly", headers={"Retry-After": "1"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal_error", "internal error; the operator's log has details")

    app.include_router(health_router)
    app.include_router(jobs_router)
    app.include_router(artifacts_router)
    app.include_router(methods_router)
    app.include_router(credentials_router)
    app.include_router(hubcompat_router)
    app.include_router(webhooks_router)
    app.include_router(keys_router)
    app.include_router(dashboard_router)  # last: `/` and `/dashboard/*` only
    install_observability(app, settings)  # /metrics; request ids, logs: the outermost middleware
    return app
