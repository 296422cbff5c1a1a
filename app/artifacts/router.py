"""HTTP routes for a job's artifact files."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from slimforge.app.artifacts import service
from slimforge.app.artifacts.responses import artifact_file_response
from slimforge.app.deps import ReadPrincipalDep, SessionDep, StoreDep, SubmitPrincipalDep
from slimforge.app.errors import error_responses
from slimforge.contract.artifacts import ArtifactOut

router = APIRouter(
    prefix="/v1/jobs",
    tags=["artifacts"],
    responses=error_responses(401, 403, 404, 409, 416, 422, 429, 503),
)


@router.delete("/{job_id}", status_code=204)
def delete_job(
    job_id: str, session: SessionDep, principal: SubmitPrincipalDep, store: StoreDep
) -> Response:
    """Delete an ended job with its artifact files, events and metrics."""
    service.delete_job(session, store=store, tenant_id=principal.tenant_id, job_id=job_id)
    return Response(status_code=204)


@router.get("/{job_id}/artifacts", response_model=ArtifactOut)
def list_artifact_files(
    job_id: str, session: SessionDep, principal: ReadPrincipalDep
) -> ArtifactOut:
    """Every file of the job's artifact, with size and sha256."""
    artifact = service.get_artifact(session, tenant_id=principal.tenant_id, job_id=job_id)
    return service.artifact_out(artifact)


@router.get(
    "/{job_id}/artifacts/{path:path}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}},
)
def download_artifact_file(
    job_id: str,
    path: str,
    request: Request,
    session: SessionDep,
    principal: ReadPrincipalDep,
    store: StoreDep,
) -> Response:
    """Stream one file (Range requests supported); ``X-Checksum-Sha256`` carries its digest."""
    artifact, entry = service.resolve_file(
        session, tenant_id=principal.tenant_id, job_id=job_id, path=path
    )
    return artifact_file_response(request, store, artifact.location, entry)


# HEAD answers with the same headers (size, ETag, checksum) and no body; one operation in the
# OpenAPI schema is enough.
router.add_api_route(
    "/{job_id}/artifacts/{path:path}",
    download_artifact_file,
    methods=["HEAD"],
    include_in_schema=False,
)
