"""Every table, imported in one place for Alembic's autogenerate and for tests."""

from slimforge.app.artifacts.models import Artifact
from slimforge.app.auth.models import ApiKey, Tenant
from slimforge.app.credentials.models import HubCredential
from slimforge.app.db import Base
from slimforge.app.jobs.models import Job, JobEvent
from slimforge.app.limits.models import TenantQuota
from slimforge.app.webhooks.models import WebhookConfig, WebhookDelivery

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
