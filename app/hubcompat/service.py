"""Job artifacts seen as Hub model repositories: lookup, revisions, listings, Hub errors.

A finished job's artifact is a repository ``<tenant name>/<job id>`` with one commit whose id is
derived from the manifest, reachable as ``main`` or by that id. Every file is presented as an LFS
file: its sha256 (in the manifest) is then the Hub's own ETag for it, and its git blob id is that of
the LFS pointer, which needs only sha256 and size, never the bytes.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from slimforge.app.artifacts.models import Artifact
from slimforge.app.artifacts.service import get_artifact
from slimforge.app.auth.service import Principal
from slimforge.app.errors import NotFound

__all__ = [
    "commit_id",
    "find_entry",
    "find_repo",
    "hub_not_found",
    "model_info",
    "resolve_revision",
    "tree",
]

DEFAULT_BRANCH = "main"
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")


def hub_not_found(code: str, message: str, commit: str | None = None) -> NotFound:
    """A 404 that ``huggingface_hub`` maps to its own error class through ``X-Error-Code``
    (RepoNotFound, RevisionNotFound, EntryNotFound). With ``X-Repo-Commit`` on EntryNotFound the
    client caches that the file does not exist, so transformers stops asking for optional files."""
    headers = {"X-Error-Code": code}
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    return NotFound(message, headers=headers)


def find_repo(session: Session, principal: Principal, namespace: str, name: str) -> Artifact:
    """The artifact behind ``namespace/name``; RepoNotFound for other tenants' namespaces,
    unknown jobs and jobs without an artifact alike, so nothing leaks about them."""
    if namespace == principal.tenant_name:
        try:
            return get_artifact(session, tenant_id=principal.tenant_id, job_id=name)
        except NotFound:
            pass
    raise hub_not_found("RepoNotFound", f"Repository {namespace}/{name} not found")


def commit_id(artifact: Artifact) -> str:
    """A stable 40-hex commit id: sha1 over the manifest's paths and sha256s, so it changes
    exactly when the files do (a re-run that produced other bytes)."""
    digest = hashlib.sha1(usedforsecurity=False)
    for entry in sorted(artifact.files, key=lambda f: f["path"]):
        digest.update(f"{entry['path']}\0{entry['sha256']}\n".encode())
    return digest.hexdigest()


def resolve_revision(artifact: Artifact, revision: str) -> str:
    """The commit id for ``main`` or the commit id itself; RevisionNotFound otherwise."""
    commit = commit_id(artifact)
    if revision == DEFAULT_BRANCH or (_COMMIT_ID.fullmatch(revision) and revision == commit):
        return commit
    raise hub_not_found("RevisionNotFound", f"Invalid rev id: {revision}")


def find_entry(artifact: Artifact, path: str, commit: str) -> dict[str, Any]:
    """The manifest entry of ``path``; only names in the manifest exist."""
    entry = next((f for f in artifact.files if f["path"] == path), None)
    if entry is None:
        raise hub_not_found("EntryNotFound", f"Entry not found: {path}", commit)
    return entry


def _pointer(entry: dict[str, Any]) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{entry['sha256']}\n"
        f"size {int(entry['size'])}\n"
    ).encode()


def _blob_id(entry: dict[str, Any]) -> str:
    """git's blob id of the file's LFS pointer, as the Hub reports for LFS files."""
    pointer = _pointer(entry)
    return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer, usedforsecurity=False).hexdigest()


def _lfs(entry: dict[str, Any]) -> dict[str, Any]:
    return {"size": int(entry["size"]), "pointerSize": len(_pointer(entry))}


def _hub_date(when: datetime) -> str:
    """The Hub's date format (``2024-01-31T12:00:00.000Z``), which ``parse_datetime`` reads."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_info(
    artifact: Artifact, *, repo_id: str, commit: str, files_metadata: bool
) -> dict[str, Any]:
    """``GET /api/models/{repo}``: what ``model_info``/``repo_info`` parse. File sizes and LFS
    details only when asked (``blobs=true``), as on the Hub."""
    siblings = []
    for entry in sorted(artifact.files, key=lambda f: f["path"]):
        sibling: dict[str, Any] = {"rfilename": entry["path"]}
        if files_metadata:
            lfs = {"sha256": entry["sha256"], **_lfs(entry)}
            sibling |= {"size": int(entry["size"]), "blobId": _blob_id(entry), "lfs": lfs}
        siblings.append(sibling)
    date = _hub_date(artifact.created_at)
    return {
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.split("/", 1)[0],
        "sha": commit,
        "private": True,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "createdAt": date,
        "lastModified": date,
        "library_name": "transformers",
        "tags": ["transformers", "slimforge"],
        "usedStorage": int(artifact.total_size),
        "siblings": siblings,
    }


def tree(artifact: Artifact, *, path: str, recursive: bool, commit: str) -> list[dict[str, Any]]:
    """``GET /api/models/{repo}/tree/{rev}[/{path}]``: folders then files directly under
    ``path`` (everything below it with ``recursive``), in one page: with no ``Link`` header the
    client stops there. EntryNotFound for a folder that does not exist, as on the Hub."""
    prefix = f"{path.strip('/')}/" if path.strip("/") else ""
    files: list[dict[str, Any]] = []
    folders: set[str] = set()
    for entry in sorted(artifact.files, key=lambda f: f["path"]):
        if not entry["path"].startswith(prefix):
            continue
        parts = entry["path"][len(prefix) :].split("/")
        depth = len(parts) - 1 if recursive else min(len(parts) - 1, 1)
        folders.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
        if recursive or len(parts) == 1:
            lfs = {"oid": entry["sha256"], **_lfs(entry)}
            files.append(
                {
                    "type": "file",
                    "path": entry["path"],
                    "size": int(entry["size"]),
                    "oid": _blob_id(entry),
                    "lfs": lfs,
                }
            )
    if prefix and not files and not folders:
        raise hub_not_found("EntryNotFound", f"{path} does not exist", commit)
    dirs = [
        {
            "type": "directory",
            "path": folder,
            "size": 0,
            "oid": hashlib.sha1(f"{commit}:{folder}".encode(), usedforsecurity=False).hexdigest(),
        }
        for folder in sorted(folders)
    ]
    return dirs + files
