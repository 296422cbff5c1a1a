"""Per-tenant quotas: jobs queued or running at once, jobs per rolling 24 hours, model size.

Defaults come from the settings (``quota_*``; unset = unlimited); a ``tenant_quotas`` row
overrides them per tenant (NULL: the default, 0: unlimited). The API checks them at submit
(429 with ``Retry-After``); the worker checks the model size again after loading a model the
API could not read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from slimforge.app.auth.models import Tenant
from slimforge.app.auth.service import get_or_create_tenant
from slimforge.app.db import utcnow
from slimforge.app.errors import AppError
from slimforge.app.jobs.models import Job
from slimforge.app.limits.models import TenantQuota
from slimforge.app.settings import Settings

__all__ = [
    "ACTIVE_STATUSES",
    "ModelTooLarge",
    "QuotaExceeded",
    "Quotas",
    "check_model_size",
    "check_submit_quotas",
    "effective_quotas",
    "model_size_error",
    "set_tenant_quota",
]

ACTIVE_STATUSES = ("queued", "running")
DAY = timedelta(hours=24)
# A concurrency slot frees when one of the tenant's jobs ends: ask again soon.
CONCURRENCY_RETRY_SECONDS = 5


class QuotaExceeded(AppError):
    status_code = 429
    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_after: int, **kwargs: Any):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))}, **kwargs)


class ModelTooLarge(AppError):
    """Not a 429: retrying cannot help (and clients retry 429s)."""

    status_code = 422
    code = "quota_exceeded"


@dataclass(frozen=True)
class Quotas:
    """A tenant's effective limits; None means unlimited."""

    concurrent_jobs: int | None
    jobs_per_day: int | None
    max_model_params: int | None


def _pick(own: int | None, default: int | None) -> int | None:
    if own is None:
        return default
    return own or None  # 0: unlimited for this tenant


def effective_quotas(session: Session, *, tenant_id: str, settings: Settings) -> Quotas:
    row = session.get(TenantQuota, tenant_id)
    own = row or TenantQuota()
    return Quotas(
        concurrent_jobs=_pick(own.concurrent_jobs, settings.quota_concurrent_jobs),
        jobs_per_day=_pick(own.jobs_per_day, settings.quota_jobs_per_day),
        max_model_params=_pick(own.max_model_params, settings.quota_max_model_params),
    )


def set_tenant_quota(
    session: Session,
    *,
    tenant_name: str,
    concurrent_jobs: int | None = None,
    jobs_per_day: int | None = None,
    max_model_params: int | None = None,
) -> TenantQuota:
    """Set the tenant's own quotas (the tenant is created if new). Each value: None = the
    settings' default, 0 = unlimited, n = at most n. Replaces every value of the row."""
    for name, value in (
        ("concurrent_jobs", concurrent_jobs),
        ("jobs_per_day", jobs_per_day),
        ("max_model_params", max_model_params),
    ):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be 0 (unlimited) or more, not {value}")
    tenant = get_or_create_tenant(session, name=tenant_name)
    row = session.get(TenantQuota, tenant.id)
    if row is None:
        row = TenantQuota(tenant_id=tenant.id)
        session.add(row)
    row.concurrent_jobs = concurrent_jobs
    row.jobs_per_day = jobs_per_day
    row.max_model_params = max_model_params
    row.updated_at = utcnow()
    session.flush()
    return row


def check_submit_quotas(
    session: Session, *, tenant_id: str, settings: Settings, now: datetime | None = None
) -> Quotas:
    """Raise :class:`QuotaExceeded` (429) when one more job would exceed the tenant's limit of
    jobs at once or per 24 hours; returns the effective quotas otherwise.

    On PostgreSQL the tenant's row is locked until the submit commits, so concurrent submits
    of one tenant are counted one after the other (SQLite serialises writers anyway).
    """
    quotas = effective_quotas(session, tenant_id=tenant_id, settings=settings)
    if quotas.concurrent_jobs is None and quotas.jobs_per_day is None:
        return quotas
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    if quotas.concurrent_jobs is not None:
        active = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_STATUSES))
        )
        if (active or 0) >= quotas.concurrent_jobs:
            raise QuotaExceeded(
                f"quota exceeded: at most {quotas.concurrent_jobs} jobs queued or running at "
                f"once (concurrent_jobs); {active} are. Retry when one ends, or cancel one",
                retry_after=CONCURRENCY_RETRY_SECONDS,
                details={"limit": "concurrent_jobs", "value": quotas.concurrent_jobs},
            )
    if quotas.jobs_per_day is not None:
        now = now or utcnow()
        since = now - DAY
        times = list(
            session.scalars(
                select(Job.created_at)
                .where(Job.tenant_id == tenant_id, Job.created_at > since)
                .order_by(Job.created_at)
            )
        )
        if len(times) >= quotas.jobs_per_day:
            # One more job fits once enough of the oldest ones leave the window.
            frees_at = times[len(times) - quotas.jobs_per_day] + DAY
            wait = math.ceil((frees_at - now).total_seconds())
            raise QuotaExceeded(
                f"quota exceeded: at most {quotas.jobs_per_day} jobs per 24 hours "
                f"(jobs_per_day); {len(times)} were submitted in the last 24 hours. The next "
                f"one can be submitted in {max(1, wait)} s",
                retry_after=wait,
                details={"limit": "jobs_per_day", "value": quotas.jobs_per_day},
            )
    return quotas


def model_size_error(params: int, limit: int) -> str:
    return (
        f"quota exceeded: the model has {params:,} parameters, more than this tenant's limit "
        f"of {limit:,} (max_model_params); use a smaller model or ask the operator to raise "
        "the quota"
    )


def check_model_size(
    session: Session, *, tenant_id: str, settings: Settings, params: int | None
) -> None:
    """Refuse (422) a model larger than the tenant's ``max_model_params``; ``params`` None (not
    known at submit) is left to the worker."""
    if params is None:
        return
    limit = effective_quotas(session, tenant_id=tenant_id, settings=settings).max_model_params
    if limit is not None and params > limit:
        raise ModelTooLarge(
            model_size_error(params, limit),
            details={
                "limit": "max_model_params",
                "value": limit,
                "model_params": params,
                "field": "model",
            },
        )
