"""Hub-compatible read routes (outside ``/v1``, where the Hub's clients look for them).

``HF_ENDPOINT=<this service> HF_TOKEN=<API key> hf download <tenant>/<job id>`` and
``from_pretrained("<tenant>/<job id>")`` work unchanged against these routes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from slimforge.app.artifacts.responses import artifact_file_response
from slimforge.app.deps import ReadPrincipalDep, SessionDep, StoreDep
from slimforge.app.errors import AppError, ErrorResponse, error_responses
from slimforge.app.hubcompat import service

__all__ = ["router"]

# huggingface_hub shows this 401 as "bad token" rather than guessing "repository not found".
_BAD_CREDENTIALS = "Invalid credentials in Authorization header"


def _header_text(text: str) -> str:
    """Printable ASCII only: messages quote URL parts, which may hold anything."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:500]


def hub_error_response(exc: AppError) -> JSONResponse:
    """An error as the Hub sends it: ``{"error": message}`` plus ``X-Error-Message`` (and the
    ``X-Error-Code`` the service set), which ``hf_raise_for_status`` reads."""
    message = _BAD_CREDENTIALS if exc.status_code == 401 else _header_text(exc.message)
    headers = {**exc.headers, "X-Error-Message": message}
    return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)


class HubRoute(APIRoute):
    """Renders AppErrors (auth included: dependencies run inside the handler) the Hub's way on
    these routes only; the rest of the API keeps its own error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def hub_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return hub_error_response(exc)

        return hub_handler


class HubError(BaseModel):
    """Errors of these routes, as the Hub sends them (also in ``X-Error-Message``)."""

    error: str


router = APIRouter(
    tags=["hub"],
    route_class=HubRoute,
    responses={
        **error_responses(413, 422, 429, 503),  # validation and limits: the API's own shape
        401: {"model": HubError, "description": "Missing or invalid API key"},
        403: {"model": HubError, "description": "The API key lacks the 'read' scope"},
        # A path no route matches (a file path with a newline) gets the API's own 404 body.
        404: {
            "model": HubError | ErrorResponse,
            "description": "RepoNotFound, RevisionNotFound, EntryNotFound",
        },
        416: {"model": HubError, "description": "Range outside the file"},
    },
)

REPO_API = "/api/models/{namespace}/{name}"


@router.get(REPO_API)
def model_info(
    namespace: str,
    name: str,
    session: SessionDep,
    principal: ReadPrincipalDep,
    blobs: bool = False,
) -> dict[str, Any]:
    """The artifact as a Hub model (``model_info``/``repo_info``): commit ``sha`` and files."""
    return model_info_at_revision(namespace, name, "main", session, principal, blobs)


# ``{revision:path}``: the client percent-encodes "/" in revisions, which arrives decoded; such a
# revision must still answer RevisionNotFound, not a bare 404.
@router.get(REPO_API + "/revision/{revision:path}")
def model_info_at_revision(
    namespace: str,
    name: str,
    revision: str,
    session: SessionDep,
    principal: ReadPrincipalDep,
    blobs: bool = False,
) -> dict[str, Any]:
    """The artifact as a Hub model at ``main`` or its commit id."""
    artifact = service.find_repo(session, principal, namespace, name)
    commit = service.resolve_revision(artifact, revision)
    repo_id = f"{namespace}/{name}"
    return service.model_info(artifact, repo_id=repo_id, commit=commit, files_metadata=blobs)


@router.get(REPO_API + "/tree/{revision}")
@router.get(REPO_API + "/tree/{revision}/{path:path}")
def list_tree(
    namespace: str,
    name: str,
    revision: str,
    session: SessionDep,
    principal: ReadPrincipalDep,
    path: str = "",
    recursive: bool = False,
) -> list[dict[str, Any]]:
    """Files (with size, sha256 as LFS oid) and folders under ``path`` (``list_repo_tree``,
    ``list_repo_files``, ``snapshot_download``)."""
    artifact = service.find_repo(session, principal, namespace, name)
    commit = service.resolve_revision(artifact, revision)
    return service.tree(artifact, path=path, recursive=recursive, commit=commit)


@router.get(
    "/{namespace}/{name}/resolve/{revision}/{path:path}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}},
)
def resolve_file(
    namespace: str,
    name: str,
    revision: str,
    path: str,
    request: Request,
    session: SessionDep,
    principal: ReadPrincipalDep,
    store: StoreDep,
) -> Response:
    """One file's bytes (Range supported); HEAD gives what ``get_hf_file_metadata`` needs."""
    artifact = service.find_repo(session, principal, namespace, name)
    commit = service.resolve_revision(artifact, revision)
    entry = service.find_entry(artifact, path, commit)
    headers = {
        # Required: without it the client refuses the file as "not served by a Hub".
        "X-Repo-Commit": commit,
        # Read before ETag/Content-Length, so the cache key (sha256) and the size the client
        # checks after the download never depend on how a proxy treats Content-Length.
        "X-Linked-Etag": f'"{entry["sha256"]}"',
        "X-Linked-Size": str(int(entry["size"])),
    }
    return artifact_file_response(request, store, artifact.location, entry, headers=headers)


# HEAD carries the same headers and no body; one operation in the OpenAPI schema is enough.
router.add_api_route(
    "/{namespace}/{name}/resolve/{revision}/{path:path}",
    resolve_file,
    methods=["HEAD"],
    include_in_schema=False,
)
