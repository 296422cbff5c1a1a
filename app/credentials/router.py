"""HTTP routes for credentials. The token is write-only: no route ever returns it."""

from __future__ import annotations

from fastapi import APIRouter, Response

from slimforge.app.credentials import service
from slimforge.app.deps import AdminPrincipalDep, ReadPrincipalDep, SessionDep, SettingsDep
from slimforge.app.errors import NotFound, error_responses
from slimforge.contract.credentials import HubCredentialIn, HubCredentialOut

router = APIRouter(
    prefix="/v1/credentials",
    tags=["credentials"],
    responses=error_responses(400, 401, 403, 404, 413, 422, 429, 503),
)


@router.put("/hub", response_model=HubCredentialOut)
def put_hub_token(
    body: HubCredentialIn,
    session: SessionDep,
    principal: AdminPrincipalDep,
    settings: SettingsDep,
) -> HubCredentialOut:
    """Set the tenant's Hugging Face token, used to push jobs with `output.hub_repo`."""
    return service.set_hub_token(
        session, tenant_id=principal.tenant_id, token=body.token, settings=settings
    )


@router.get("/hub", response_model=HubCredentialOut)
def get_hub_token_status(session: SessionDep, principal: ReadPrincipalDep) -> HubCredentialOut:
    """Whether a token is set (and its last characters); never the token itself."""
    return service.describe_hub_token(session, tenant_id=principal.tenant_id)


@router.delete("/hub", status_code=204)
def delete_hub_token(session: SessionDep, principal: AdminPrincipalDep) -> Response:
    """Remove the tenant's token."""
    if not service.delete_hub_token(session, tenant_id=principal.tenant_id):
        raise NotFound("no Hub token is set for this tenant")
    return Response(status_code=204)
