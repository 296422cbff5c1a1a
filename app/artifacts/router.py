"""HTTP routes for a job's artifact files."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from app.artifacts import service
from app.artifacts.schemas import ArtifactOut
from app.artifacts.storage import LocalArtifactStore
from app.deps import PrincipalDep, SessionDep, SettingsDep

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


@router.get("/{job_id}/artifacts", response_model=ArtifactOut)
def list_artifact_files(job_id: str, session: SessionDep, principal: PrincipalDep) -> ArtifactOut:
    """Every file of the job's artifact, with size and sha256."""
    artifact = service.get_artifact(session, tenant_id=principal.tenant_id, job_id=job_id)
    return service.artifact_out(artifact)


@router.get("/{job_id}/artifacts/{path:path}", response_class=FileResponse)
def download_artifact_file(
    job_id: str,
    path: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> FileResponse:
    """Stream one file (Range requests supported); ``X-Checksum-Sha256`` carries its digest."""
    store = LocalArtifactStore(settings.artifacts_root)
    file_path, entry = service.resolve_file(
        session, store=store, tenant_id=principal.tenant_id, job_id=job_id, path=path
    )
    return FileResponse(
        file_path,
        filename=file_path.name,
        headers={"ETag": f'"{entry["sha256"]}"', "X-Checksum-Sha256": entry["sha256"]},
    )
