"""HTTP routes for webhooks. HTTP concerns only: the work is in
``slimforge.app.webhooks.service``."""

from __future__ import annotations

from fastapi import APIRouter, Response

from slimforge.app.deps import AdminPrincipalDep, ReadPrincipalDep, SessionDep, SettingsDep
from slimforge.app.errors import NotFound, error_responses
from slimforge.app.webhooks import service
from slimforge.contract.webhooks import (
    DeliveryPage,
    Webhook,
    WebhookDefaultOut,
    WebhookSecretOut,
)

router = APIRouter(
    tags=["webhooks"], responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)
)


@router.get("/v1/webhooks/default", response_model=WebhookDefaultOut)
def get_default_webhook(session: SessionDep, principal: ReadPrincipalDep) -> WebhookDefaultOut:
    """The tenant's default webhook, used by jobs that do not name their own."""
    return service.get_default(session, tenant_id=principal.tenant_id)


@router.put("/v1/webhooks/default", response_model=WebhookDefaultOut)
def put_default_webhook(
    body: Webhook, session: SessionDep, principal: AdminPrincipalDep, settings: SettingsDep
) -> WebhookDefaultOut:
    """Set the default webhook. The first time, the answer also carries the signing secret."""
    return service.set_default(
        session, tenant_id=principal.tenant_id, webhook=body, settings=settings
    )


@router.delete("/v1/webhooks/default", status_code=204)
def delete_default_webhook(session: SessionDep, principal: AdminPrincipalDep) -> Response:
    """Remove the default webhook (the signing secret stays)."""
    if not service.delete_default(session, tenant_id=principal.tenant_id):
        raise NotFound("no default webhook is set for this tenant")
    return Response(status_code=204)


@router.post("/v1/webhooks/secret", status_code=201, response_model=WebhookSecretOut)
def rotate_webhook_secret(
    session: SessionDep, principal: AdminPrincipalDep, settings: SettingsDep
) -> WebhookSecretOut:
    """Create (or replace) the signing secret. It is shown in this answer only."""
    return service.rotate_secret(session, tenant_id=principal.tenant_id, settings=settings)


@router.get("/v1/jobs/{job_id}/webhook-deliveries", response_model=DeliveryPage)
def list_webhook_deliveries(
    job_id: str, session: SessionDep, principal: ReadPrincipalDep
) -> DeliveryPage:
    """Every delivery attempt of the job's webhook events, oldest first."""
    rows = service.list_deliveries(session, tenant_id=principal.tenant_id, job_id=job_id)
    return DeliveryPage(items=[service.delivery_out(r) for r in rows])
