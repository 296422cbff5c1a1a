"""HTTP routes for the tenant's API keys (admin scope). HTTP concerns only: the work is in
``slimforge.app.auth.service``."""

from __future__ import annotations

from fastapi import APIRouter, Response

from slimforge.app.auth import service
from slimforge.app.deps import AdminPrincipalDep, SessionDep
from slimforge.app.errors import error_responses
from slimforge.contract.keys import ApiKeyCreate, ApiKeyCreated, ApiKeyList

router = APIRouter(
    prefix="/v1/keys",
    tags=["keys"],
    responses=error_responses(400, 401, 403, 404, 413, 422, 429, 503),
)


@router.post("", status_code=201, response_model=ApiKeyCreated)
def create_key(
    body: ApiKeyCreate, session: SessionDep, principal: AdminPrincipalDep
) -> ApiKeyCreated:
    """Create a key of this tenant. The key is in this answer only: store it now."""
    row, key = service.issue_key(
        session, tenant_id=principal.tenant_id, scopes=body.scopes, name=body.name
    )
    return ApiKeyCreated(**service.key_out(row).model_dump(), key=key)


@router.get("", response_model=ApiKeyList)
def list_keys(session: SessionDep, principal: AdminPrincipalDep) -> ApiKeyList:
    """The tenant's keys, revoked ones included, oldest first (never the keys themselves)."""
    rows = service.list_keys(session, tenant_id=principal.tenant_id)
    return ApiKeyList(items=[service.key_out(r) for r in rows])


@router.delete("/{key_id}", status_code=204)
def revoke_key(key_id: str, session: SessionDep, principal: AdminPrincipalDep) -> Response:
    """Revoke a key: requests with it get 401 at once. Revoking the calling key is allowed."""
    service.revoke_key(session, tenant_id=principal.tenant_id, key_id=key_id)
    return Response(status_code=204)
