"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from slimforge.app.deps import CeleryDep, SessionDep, SettingsDep
from slimforge.app.queue import broker_reachable

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "Not ready: the database or the broker is unreachable, or (slimforge "
            "serve) one of its workers is not running"
        }
    },
)
def readyz(
    request: Request, session: SessionDep, settings: SettingsDep, celery: CeleryDep
) -> JSONResponse:
    """Ready when the database answers and the broker is reachable; 503 otherwise.

    Under ``slimforge serve`` the API is its workers' parent and checks them too
    (``worker:jobs``, ``worker:webhooks``): a worker that died is missing until it has been
    restarted. A separately deployed API does not: its workers scale on their own, and jobs
    wait queued while none runs.
    """
    checks: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["broker"] = "ok" if broker_reachable(celery, settings) else "unreachable"
    workers = getattr(request.app.state, "workers", None)  # set by slimforge serve
    if workers is not None:
        checks.update(workers.status())
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers={} if ready else {"Retry-After": "5"},
    )
