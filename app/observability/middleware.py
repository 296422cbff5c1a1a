"""One pure-ASGI middleware for request ids, HTTP metrics and the per-request log line.

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses (server-sent events, artifact
downloads) pass through untouched. The log line carries the method, the route *template*,
the status, the duration and the tenant when a later layer put it in ``request.state.tenant``;
never headers, query strings or bodies, so keys, tokens and secrets cannot reach the log.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slimforge.app.observability.logging import new_request_id, request_id_var
from slimforge.app.observability.metrics import UNMATCHED_ROUTE, Metrics

__all__ = ["REQUEST_ID_HEADER", "ObservabilityMiddleware"]

REQUEST_ID_HEADER = "X-Request-ID"
access_log = logging.getLogger("slimforge.access")
# Probes and scrapes that succeed are logged at DEBUG: they come every few seconds.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def _tenant(state: dict[str, Any]) -> str | None:
    tenant = state.get("tenant")
    if tenant is None:
        principal = state.get("principal")
        tenant = getattr(principal, "tenant_name", None)
    return tenant if isinstance(tenant, str) else None


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        status: int | None = None
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            failed = True
            raise
        finally:
            seconds = time.perf_counter() - start
            final = status if status is not None else 500
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            if self.metrics is not None:
                self.metrics.observe_request(
                    method=method, route=route, status=final, seconds=seconds
                )
            level = logging.ERROR if final >= 500 else logging.INFO
            if level == logging.INFO and route in _QUIET_ROUTES and final < 400:
                level = logging.DEBUG
            access_log.log(
                level,
                "%s %s %d",
                method,
                route,
                final,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": final,
                    "duration_ms": round(seconds * 1000, 1),
                    "tenant": _tenant(state),
                },
            )
            # Left set after an unhandled error: the outermost 500 handler puts it in the body.
            if not failed:
                request_id_var.reset(token)
