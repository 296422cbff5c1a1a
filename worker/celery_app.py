"""The worker's Celery application: the shared configuration plus the ``run_job`` task."""

from __future__ import annotations

from celery import Celery

from slimforge.app.db import make_engine, make_session_factory
from slimforge.app.queue import make_celery_app
from slimforge.app.settings import Settings
from slimforge.worker.tasks import register_tasks

__all__ = ["make_celery"]


def make_celery(settings: Settings) -> Celery:
    """Build the worker app for ``settings``; the engine belongs to this app, not the module."""
    app = make_celery_app(settings)
    factory = make_session_factory(make_engine(settings.database_url))
    register_tasks(app, settings=settings, session_factory=factory)
    return app
