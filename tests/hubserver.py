"""A local Hugging Face Hub for tests: the real ``huggingface_hub`` client (2.4) pushes model
repositories to it and downloads them back over HTTP, on 127.0.0.1 only.

    with running_hub(tmp_path / "hub", token="hf_test") as hub:
        api = HfApi(endpoint=hub.endpoint, token=hub.token)
        api.create_repo("me/tiny", private=True)
        api.upload_folder(folder_path=folder, repo_id="me/tiny", commit_message="first")
        assert hub.files("me/tiny")["config.json"] == (folder / "config.json").read_bytes()
        assert [c["message"] for c in hub.commits("me/tiny")] == ["first"]
        snapshot_download("me/tiny", endpoint=hub.endpoint, token=hub.token, cache_dir=cache)

Only what the client needs for that is served: model repositories, branches, regular files sent
inline in the commit, large files through the LFS *basic* transfer (one PUT per object to a signed
URL), and downloads through ``/resolve`` with the Hub's headers, large files redirected to a second
origin (the "CDN") as on huggingface.co. Xet storage is not spoken: the client uploads through Xet
whenever ``hf_xet`` is installed, whatever the server answers, so ``running_hub`` turns the client's
``HF_HUB_DISABLE_XET`` switch on in this process while it runs (a subprocess needs ``hub.env``).
Revisions in URLs must be a branch name without "/" or a full commit id.

To test a client that dies mid-push, ``hub.stall(point)`` holds the next request at a point of
the push (see :data:`STALL_POINTS`) until the test releases it; by default nothing is held.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from huggingface_hub import constants as hf_constants
from starlette.requests import ClientDisconnect

__all__ = [
    "STALL_POINTS",
    "CommitRecord",
    "LocalHub",
    "RepoRecord",
    "Stall",
    "StoredFile",
    "running_hub",
]

# Stored through LFS whatever their size, as the Hub's default .gitattributes says.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".model")
SIGNED_PREFIX = "/lfs-objects/"  # the "CDN" URLs: authorised by their signature, not the token
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")
# Where ``LocalHub.stall`` can hold a request: "upload", an LFS PUT before its body is read,
# then dropped unstored with a 503 as if the connection broke mid-body (on loopback a killed
# client has often handed the whole small body to the kernel already, and the server would
# store it); "commit", a commit already applied to the branch but not yet answered (the
# client cannot know it landed).
STALL_POINTS = ("upload", "commit")


def _now() -> str:
    """The Hub's date format, the only one ``huggingface_hub.utils.parse_datetime`` reads."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _git_oid(data: bytes) -> str:
    """git's blob id: the Hub's ``oid`` of a file (the client compares it before uploading)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    sha256: str  # name of the bytes in ``root/objects``
    size: int
    lfs: bool
    oid: str  # git blob id: of the content, or of the LFS pointer file for LFS files
    pointer_size: int = 0


@dataclass
class CommitRecord:
    id: str
    message: str
    description: str
    parent: str | None
    date: str
    tree: dict[str, StoredFile]


@dataclass
class RepoRecord:
    repo_id: str
    private: bool
    created_at: str = field(default_factory=_now)
    branches: dict[str, str | None] = field(default_factory=lambda: {"main": None})
    commits: dict[str, CommitRecord] = field(default_factory=dict)


@dataclass
class Stall:
    """A hold on the next ``times`` requests at one of :data:`STALL_POINTS`.

    ``arrived`` is set once a request is being held; a held request goes on (a held upload is
    dropped) when the test calls :meth:`release` or after ``seconds``, whichever comes first.
    """

    point: str
    seconds: float
    times: int = 1
    held: int = 0  # requests held so far
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """Let the held request (and any later one at this point) go on at once."""
        self.released.set()

    def wait_arrived(self, timeout: float) -> bool:
        """True once a request is held at this point; False if none came within ``timeout``."""
        return self.arrived.wait(timeout)


class HubError(Exception):
    """Answered as the Hub does: JSON ``{"error": ...}`` plus ``X-Error-Code``/``-Message``
    headers, which ``hf_raise_for_status`` turns into the matching ``HfHubHTTPError`` subclass."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> JSONResponse:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, self.status, headers=headers)


class LocalHub:
    """The server's state and the test-side view of it. Bytes live in ``root/objects`` (named by
    sha256), repositories and commits in memory."""

    def __init__(self, root: Path, *, token: str, username: str, lfs_min_size: int) -> None:
        self.root, self.token, self.username = root, token, username
        self.lfs_min_size = lfs_min_size
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.endpoint = ""  # set once the sockets are bound
        self.cdn = ""
        self.repos: dict[str, RepoRecord] = {}
        self.requests: list[str] = []  # "METHOD /path" of every request, in order
        self.lock = threading.Lock()
        self.stalls: dict[str, Stall] = {}
        self._secret = secrets.token_bytes(16)

    # -- inspection, for tests --------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client in a subprocess (``running_hub`` only switches Xet off here)."""
        return {"HF_ENDPOINT": self.endpoint, "HF_TOKEN": self.token, "HF_HUB_DISABLE_XET": "1"}

    def repo(self, repo_id: str) -> RepoRecord:
        return self.repos[repo_id]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Every file of ``revision`` (a branch or commit id) with its bytes."""
        with self.lock:
            commit = self._resolve(self.repos[repo_id], revision)
            tree = commit.tree if commit else {}
        return {path: self.blob(f.sha256).read_bytes() for path, f in sorted(tree.items())}

    def lfs_paths(self, repo_id: str, revision: str = "main") -> set[str]:
        """The files of ``revision`` that were uploaded through LFS."""
        with self.lock:
            commit = self._resolve(self.repos[repo_id], revision)
            return {path for path, f in (commit.tree if commit else {}).items() if f.lfs}

    def commits(self, repo_id: str, revision: str = "main") -> list[dict[str, Any]]:
        """The history of ``revision``, oldest first: id, message, description, parent, date."""
        with self.lock:
            repo, history = self.repos[repo_id], []
            commit = self._resolve(repo, revision)
            keys = ("id", "message", "description", "parent", "date")
            while commit is not None:
                history.append({k: getattr(commit, k) for k in keys})
                commit = repo.commits[commit.parent] if commit.parent else None
        return history[::-1]

    def stall(self, point: str, *, seconds: float = 60.0, times: int = 1) -> Stall:
        """Hold the next ``times`` requests at ``point`` (one of :data:`STALL_POINTS`) until
        the returned :class:`Stall` is released or ``seconds`` pass; replaces an earlier stall
        at that point."""
        if point not in STALL_POINTS:
            raise ValueError(f"unknown stall point {point!r}; one of {STALL_POINTS}")
        stall = Stall(point, seconds, times)
        with self.lock:
            self.stalls[point] = stall
        return stall

    # -- helpers for the routes -------------------------------------------------------------

    async def hold(self, point: str) -> bool:
        """Wait here if a stall is armed at ``point``; True if this request was held. Polls
        instead of blocking on the event: this runs on the server's event loop, which must keep
        serving other requests (and stop promptly when the hub shuts down)."""
        with self.lock:
            stall = self.stalls.get(point)
            if stall is None or stall.held >= stall.times:
                return False
            stall.held += 1
        stall.arrived.set()
        deadline = time.monotonic() + stall.seconds
        while not stall.released.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return True

    def blob(self, sha256: str) -> Path:
        return self.objects / sha256

    def store(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.blob(sha).exists():
            tmp = self.objects / f".{sha}.{secrets.token_hex(4)}"
            tmp.write_bytes(data)
            os.replace(tmp, self.blob(sha))  # never a half-written object under its final name
        return sha

    def sign(self, method: str, sha256: str, size: int) -> str:
        """A URL on the CDN origin that needs no token, like the Hub's presigned S3/CDN URLs."""
        sig = hmac.new(self._secret, f"{method} {sha256} {size}".encode(), "sha256").hexdigest()
        return f"{self.cdn}{SIGNED_PREFIX}{sha256}?size={size}&sig={sig}"

    def check_signature(self, request: Request, sha256: str) -> int:
        size = request.query_params.get("size", "")
        if not size.isdigit():
            raise HubError(403, "Invalid signature")
        expected = self.sign(request.method, sha256, int(size)).rsplit("sig=", 1)[1]
        if not hmac.compare_digest(expected, request.query_params.get("sig", "")):
            raise HubError(403, "Invalid signature")
        return int(size)

    def get_repo(self, namespace: str, name: str) -> RepoRecord:
        repo = self.repos.get(f"{namespace}/{name}")
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: RepoRecord, revision: str) -> CommitRecord | None:
        """A branch's head (None while the branch has no commit) or a commit by its full id."""
        if revision in repo.branches:
            head = repo.branches[revision]
            return repo.commits[head] if head else None
        if _COMMIT_ID.fullmatch(revision) and revision in repo.commits:
            return repo.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def resolve(self, repo: RepoRecord, revision: str) -> CommitRecord | None:
        with self.lock:
            return self._resolve(repo, revision)

    def wants_lfs(self, path: str, size: int, sample: bytes) -> bool:
        """The preupload rule: LFS for weight-like names, big files and binary content."""
        return path.endswith(LFS_SUFFIXES) or size >= self.lfs_min_size or b"\0" in sample

    def lfs_file(self, sha256: str, expected_size: int | None) -> StoredFile:
        if not _SHA256.fullmatch(sha256) or not self.blob(sha256).exists():
            raise HubError(400, f"LFS object {sha256} was not uploaded")
        size = self.blob(sha256).stat().st_size
        if expected_size is not None and expected_size != size:
            raise HubError(400, f"LFS object {sha256} has {size} bytes, not {expected_size}")
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
        return StoredFile(sha256, size, True, _git_oid(pointer.encode()), len(pointer))


def _clean_path(path: str) -> str:
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(p in ("", ".", "..") for p in parts):
        raise HubError(400, f"Invalid path: {path!r}")
    return "/".join(parts)


def _tree_entry(path: str, f: StoredFile) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "path": path, "size": f.size, "oid": f.oid}
    if f.lfs:
        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    return entry


def create_app(hub: LocalHub) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    repo_api = "/api/models/{namespace}/{name}"

    @app.exception_handler(HubError)
    async def hub_error(request: Request, exc: HubError) -> JSONResponse:
        return exc.response()

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        """Every Hub route wants ``Authorization: Bearer <token>``; only the signed CDN URLs don't,
        since the client sends no token there (and drops it on a redirect to another origin)."""
        hub.requests.append(f"{request.method} {request.url.path}")
        if not request.url.path.startswith(SIGNED_PREFIX):
            given = request.headers.get("authorization")
            if given is None:
                return HubError(401, "Authorization header is missing").response()
            if not hmac.compare_digest(given.encode("latin-1"), f"Bearer {hub.token}".encode()):
                # This exact message makes the client raise HfHubHTTPError, not RepoNotFound.
                return HubError(401, "Invalid credentials in Authorization header").response()
        response: Response = await call_next(request)
        return response

    @app.get("/api/whoami-v2")
    async def whoami() -> dict[str, Any]:
        """``HfApi.whoami``: the token's user, with write access."""
        auth = {"accessToken": {"displayName": "test", "role": "write"}}
        return {"type": "user", "name": hub.username, "orgs": [], "auth": auth}

    @app.post("/api/repos/create")
    async def create_repo(request: Request) -> JSONResponse:
        """``HfApi.create_repo``. An existing repo is a 409 whose body still has ``url``: with
        ``exist_ok=True`` the client swallows the 409 and then reads ``url`` from it."""
        body = await request.json()
        if body.get("type", "model") != "model":
            raise HubError(400, "This test hub only hosts model repositories")
        repo_id = f"{body.get('organization') or hub.username}/{body['name']}"
        url = f"{hub.endpoint}/{repo_id}"
        with hub.lock:
            if repo_id in hub.repos:
                error = "You already created this model repo"
                return JSONResponse({"error": error, "url": url}, 409)
            private = body.get("visibility") == "private" or body.get("private") is True
            hub.repos[repo_id] = RepoRecord(repo_id, private=private)
        return JSONResponse({"url": url, "name": repo_id})

    @app.post("/api/validate-yaml")
    async def validate_yaml() -> dict[str, list[str]]:
        """``create_commit``/``upload_folder`` post README.md's metadata here first: accept all."""
        return {"errors": [], "warnings": []}

    @app.get(repo_api)
    @app.get(repo_api + "/revision/{revision}")
    async def model_info(
        namespace: str, name: str, revision: str = "main", blobs: bool = False
    ) -> dict[str, Any]:
        """``model_info``/``repo_info`` (and so ``snapshot_download``): ``sha`` and ``siblings``."""
        repo = hub.get_repo(namespace, name)
        commit = hub.resolve(repo, revision)
        siblings = []
        for path, f in sorted((commit.tree if commit else {}).items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling |= {"size": f.size, "blobId": f.oid}
                if f.lfs:
                    lfs = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
                    sibling["lfs"] = lfs
            siblings.append(sibling)
        return {
            "id": repo.repo_id,
            "author": namespace,
            "sha": commit.id if commit else None,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "createdAt": repo.created_at,
            "lastModified": commit.date if commit else repo.created_at,
            "tags": [],
            "siblings": siblings,
        }

    @app.get(repo_api + "/tree/{revision}")
    @app.get(repo_api + "/tree/{revision}/{path:path}")
    async def list_tree(
        namespace: str, name: str, revision: str, path: str = "", recursive: bool = False
    ) -> list[dict[str, Any]]:
        """``list_repo_tree``/``list_repo_files`` (``snapshot_download`` lists recursively at the
        commit id). One page: no ``Link`` header, so the client stops there."""
        commit = hub.resolve(hub.get_repo(namespace, name), revision)
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        files: list[dict[str, Any]] = []
        folders: set[str] = set()
        for file_path, f in sorted((commit.tree if commit else {}).items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            depth = len(parts) - 1 if recursive else min(len(parts) - 1, 1)
            folders.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
            if recursive or len(parts) == 1:
                files.append(_tree_entry(file_path, f))
        if prefix and not files and not folders:
            raise HubError(404, f"{path} does not exist", "EntryNotFound")
        dirs = [
            {"type": "directory", "path": p, "size": 0, "oid": hashlib.sha1(p.encode()).hexdigest()}
            for p in sorted(folders)
        ]
        return dirs + files

    @app.post(repo_api + "/preupload/{revision}")
    async def preupload(namespace: str, name: str, revision: str, request: Request) -> JSONResponse:
        """``create_commit``/``upload_folder`` (``_fetch_upload_modes``): "lfs" or "regular" per
        file, and the current ``oid`` so the client can drop files that did not change."""
        repo = hub.get_repo(namespace, name)
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        commit = hub.resolve(repo, revision)
        tree = commit.tree if commit else {}
        answers = []
        for item in (await request.json())["files"]:
            sample = base64.b64decode(item["sample"])
            mode = "lfs" if hub.wants_lfs(item["path"], item["size"], sample) else "regular"
            old = tree.get(item["path"])
            # Compared with what the client computes: sha256 for LFS files, git blob id otherwise.
            oid = None if old is None else old.sha256 if old.lfs else old.oid
            answers.append(
                {"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid}
            )
        return JSONResponse({"files": answers, "commitOid": commit.id if commit else None})

    @app.get(repo_api + "/xet-{kind}-token/{revision}")
    async def xet_token(namespace: str, name: str, kind: str, revision: str) -> None:
        """Where an hf_xet client would go: say plainly that this hub speaks LFS only."""
        raise HubError(501, "This test hub has no Xet storage; set HF_HUB_DISABLE_XET=1")

    @app.post("/{namespace}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch(namespace: str, name: str, request: Request) -> JSONResponse:
        """``preupload_lfs_files`` (``lfs.post_lfs_batch_info``): the git-lfs batch API, answered
        with the *basic* adapter, one signed PUT URL per missing object (no ``chunk_size`` in a
        header, which would switch the client to multipart). Known objects get no ``actions``, so
        the client skips them."""
        hub.get_repo(namespace, name)
        body = await request.json()
        if body.get("operation") != "upload" or "basic" not in body.get("transfers", ["basic"]):
            raise HubError(422, "This test hub only accepts uploads with the basic transfer")
        verify = f"{hub.endpoint}/{namespace}/{name}.git/info/lfs/objects/verify"
        objects = []
        for obj in body["objects"]:
            oid, size = str(obj["oid"]), int(obj["size"])
            if not _SHA256.fullmatch(oid):
                raise HubError(422, f"Invalid LFS oid: {oid}")
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not hub.blob(oid).exists():
                upload = {"href": hub.sign("PUT", oid, size)}
                answer["actions"] = {"upload": upload, "verify": {"href": verify}}
            objects.append(answer)
        return JSONResponse(
            {"transfer": "basic", "objects": objects}, media_type="application/vnd.git-lfs+json"
        )

    @app.put(SIGNED_PREFIX + "{sha256}")
    async def lfs_put(sha256: str, request: Request) -> Response:
        """The batch's upload ``href``: ``lfs._upload_single_part`` PUTs the raw bytes with no
        token. Kept only if the byte count and sha256 are the announced ones; one held by
        ``hub.stall("upload")`` is not kept at all."""
        size = hub.check_signature(request, sha256)
        if await hub.hold("upload"):
            raise HubError(503, "Upload interrupted; send the object again")
        digest, received = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=hub.objects, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    digest.update(chunk)
                    received += len(chunk)
                    out.write(chunk)
            if received != size or digest.hexdigest() != sha256:
                raise HubError(400, f"Got {received} bytes with sha256 {digest.hexdigest()}")
            os.replace(tmp, hub.blob(sha256))
        except ClientDisconnect:
            # The client went away mid-body: keep nothing, answer no one (no traceback logged).
            return Response(status_code=499)
        finally:
            if os.path.exists(tmp):  # a refused or cut-short upload leaves no partial file
                os.unlink(tmp)
        return Response(status_code=200)

    @app.post("/{namespace}/{name}.git/info/lfs/objects/verify")
    async def lfs_verify(namespace: str, name: str, request: Request) -> dict[str, bool]:
        """The batch's ``verify`` action, called by ``lfs_upload`` after the PUT."""
        hub.get_repo(namespace, name)
        body = await request.json()
        hub.lfs_file(str(body["oid"]), int(body["size"]))
        return {"success": True}

    @app.post(repo_api + "/commit/{revision}")
    async def commit(namespace: str, name: str, revision: str, request: Request) -> dict[str, Any]:
        """``create_commit``/``upload_folder`` (``_send_commit``): NDJSON, a ``header`` line then
        ``file`` (base64), ``lfsFile`` (already PUT), ``deletedFile`` and ``deletedFolder`` lines,
        applied all or nothing to the branch's head."""
        if request.query_params.get("create_pr"):
            raise HubError(400, "This test hub has no pull requests")
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line must be the commit header")
        header = lines[0]["value"]
        repo = hub.get_repo(namespace, name)
        with hub.lock:
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.branches[revision]
            if header.get("parentCommit") not in (None, head):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(repo.commits[head].tree) if head else {}
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = _clean_path(value["path"])
                if key == "file":
                    data = base64.b64decode(value["content"])
                    tree[path] = StoredFile(hub.store(data), len(data), False, _git_oid(data))
                elif key == "lfsFile":
                    tree[path] = hub.lfs_file(value["oid"], value.get("size"))
                elif key == "deletedFile":
                    if tree.pop(path, None) is None:
                        message = "A file with this name doesn't exist"
                        raise HubError(404, message, "EntryNotFound")
                elif key == "deletedFolder":
                    inside = [p for p in tree if p.startswith(path + "/")]
                    if not inside:
                        message = "A folder with this name doesn't exist"
                        raise HubError(404, message, "EntryNotFound")
                    for p in inside:
                        del tree[p]
                else:
                    raise HubError(400, f"Unknown commit operation: {key}")
            record = CommitRecord(
                id=secrets.token_hex(20),  # 40 hex digits, like a git sha1
                message=header["summary"],
                description=header.get("description", ""),
                parent=head,
                date=_now(),
                tree=tree,
            )
            repo.commits[record.id] = record
            repo.branches[revision] = record.id
        await hub.hold("commit")  # outside the lock: the commit is visible while it is held
        return {
            "success": True,
            "commitOid": record.id,
            "commitUrl": f"{hub.endpoint}/{repo.repo_id}/commit/{record.id}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }

    @app.post(repo_api + "/branch/{branch}")
    async def create_branch(namespace: str, name: str, branch: str, request: Request) -> Response:
        """``HfApi.create_branch``: from ``startingPoint`` or main's head; 409 if it exists (the
        client ignores that with ``exist_ok=True``)."""
        repo = hub.get_repo(namespace, name)
        body = json.loads(await request.body() or b"{}")
        with hub.lock:
            if branch in repo.branches:
                raise HubError(409, "Reference already exists")
            start = hub._resolve(repo, body.get("startingPoint") or "main")
            repo.branches[branch] = start.id if start else None
        return Response(status_code=200)

    @app.api_route("/{namespace}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve(
        request: Request, namespace: str, name: str, revision: str, path: str
    ) -> Response:
        """``hf_hub_download``/``snapshot_download``: HEAD for the metadata, then GET. The client
        needs ``X-Repo-Commit`` and an ETag; an LFS file answers 302 to the CDN origin with
        ``X-Linked-Etag`` (its sha256) and ``X-Linked-Size``: since that origin differs, the client
        stops at the redirect, reads them there, and GETs the signed URL without the token."""
        commit = hub.resolve(hub.get_repo(namespace, name), revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        f = commit.tree.get(path)
        if f is None:  # with X-Repo-Commit, the client caches that the file does not exist
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.id})
        headers = {"X-Repo-Commit": commit.id, "ETag": f'"{f.oid}"'}
        if f.lfs:
            headers |= {
                "Location": hub.sign("GET", f.sha256, f.size),
                "X-Linked-Etag": f'"{f.sha256}"',
                "X-Linked-Size": str(f.size),
            }
            return Response(status_code=302, headers=headers)
        headers["Content-Length"] = str(f.size)
        body = b"" if request.method == "HEAD" else hub.blob(f.sha256).read_bytes()
        return Response(body, headers=headers, media_type="application/octet-stream")

    @app.get(SIGNED_PREFIX + "{sha256}")
    async def lfs_get(sha256: str, request: Request) -> FileResponse:
        """The redirect target of an LFS file (the CDN): the bytes, for a valid signature."""
        hub.check_signature(request, sha256)
        return FileResponse(hub.blob(sha256), media_type="application/octet-stream")

    return app


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free port, chosen by the system
    return sock


@contextlib.contextmanager
def running_hub(
    root: Path,
    *,
    token: str = "hf_test",
    username: str = "test-user",
    lfs_min_size: int = 10 * 1024 * 1024,
) -> Iterator[LocalHub]:
    """Serve a local Hub from ``root`` (objects are stored under it) until the block ends.

    Two origins on 127.0.0.1: ``hub.endpoint`` for the API and ``hub.cdn`` for LFS bytes. While
    it runs, ``huggingface_hub.constants.HF_HUB_DISABLE_XET`` is True in this process: with
    ``hf_xet`` installed the client would otherwise upload large files through Xet, never asking
    the LFS batch endpoint.
    """
    hub = LocalHub(Path(root), token=token, username=username, lfs_min_size=lfs_min_size)
    api_sock, cdn_sock = _listen(), _listen()
    hub.endpoint = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
    hub.cdn = f"http://127.0.0.1:{cdn_sock.getsockname()[1]}"
    config = uvicorn.Config(
        create_app(hub),
        log_config=None,  # leave the test run's logging alone
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [api_sock, cdn_sock]}, name="local-hub", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the local hub did not start")
        time.sleep(0.01)
    xet_was_disabled = hf_constants.HF_HUB_DISABLE_XET
    hf_constants.HF_HUB_DISABLE_XET = True
    try:
        yield hub
    finally:
        hf_constants.HF_HUB_DISABLE_XET = xet_was_disabled
        server.should_exit = True
        thread.join(timeout=10)
        api_sock.close()
        cdn_sock.close()
