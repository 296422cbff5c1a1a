"""Every table, imported in one place for Alembic's autogenerate and for tests."""

from app.artifacts.models import Artifact
from app.auth.models import ApiKey, Tenant
from app.credentials.models import HubCredential
from app.db import Base
from app.jobs.models import Job, JobEvent
from app.limits.models import TenantQuota
from app.webhooks.models import WebhookConfig, WebhookDelivery

__all__ = [
    "ApiKey",
    "Artifact",
    "Base",
    "HubCredential",
    "Job",
    "JobEvent",
    "Tenant",
    "TenantQuota",
    "WebhookConfig",
    "WebhookDelivery",
]
