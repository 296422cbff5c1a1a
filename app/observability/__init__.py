"""Observability of the API: Prometheus metrics at ``/metrics``, request ids and JSON logs."""

from __future__ import annotations

from fastapi import FastAPI

from slimforge.app.observability.logging import configure_logging, current_request_id
from slimforge.app.observability.metrics import Metrics
from slimforge.app.observability.middleware import REQUEST_ID_HEADER, ObservabilityMiddleware
from slimforge.app.settings import Settings

__all__ = [
    "REQUEST_ID_HEADER",
    "configure_logging",
    "current_request_id",
    "install_observability",
]


def install_observability(app: FastAPI, settings: Settings) -> None:
    """Add the request-id/metrics/log middleware (outermost when called last) and, when
    ``settings.metrics_enabled``, the ``/metrics`` route with this app's own registry."""
    metrics: Metrics | None = None
    if settings.metrics_enabled:
        from slimforge.app.observability.router import router

        metrics = Metrics(app.state.session_factory, recent_jobs=settings.metrics_recent_jobs)
        app.state.metrics = metrics
        app.include_router(router)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
