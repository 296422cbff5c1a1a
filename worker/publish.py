"""The ``publishing`` stage: push a stored artifact to a Hugging Face Hub model repository.

huggingface_hub does the protocol (create the repository, pre-upload, large files through
LFS, one commit). Calls are retried with exponential backoff on 5xx, 429 and network errors;
a 4xx other than 429 (bad token, no write access, invalid name) fails at once with a message
that says what to fix. The token never appears in events, errors or logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2  # huggingface_hub 2's HTTP client: its errors are not httpx's
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from slimforge.compression import Reporter

log = logging.getLogger("slimforge.worker")

__all__ = ["PublishError", "publish_artifact"]

T = TypeVar("T")
_NETWORK_ERRORS = (httpx.TransportError, httpx2.TransportError, ConnectionError, TimeoutError)


class PublishError(RuntimeError):
    """The push failed; the message is safe to show (no token) and says what to change."""


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _NETWORK_ERRORS):
        return True
    status = _status(exc)
    return status is not None and (status >= 500 or status == 429)


def _explain(exc: BaseException, what: str, repo_id: str) -> str:
    status = _status(exc)
    if status == 401:
        return (
            f"{what}: the Hub refused the token (401); set a valid one with PUT /v1/credentials/hub"
        )
    if status == 403:
        return f"{what}: the token has no write access to '{repo_id}' (403)"
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{what}: {first_line}"


def _with_retries(
    call: Callable[[], T],
    *,
    what: str,
    repo_id: str,
    attempts: int,
    backoff: float,
    reporter: Reporter,
    secret: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (HfHubHTTPError, httpx.HTTPError, httpx2.HTTPError, OSError) as exc:
            message = _explain(exc, what, repo_id).replace(secret, "***")
            if not _retryable(exc) or attempt == attempts:
                raise PublishError(message) from None
            reporter.event(
                f"{what} failed, retrying in {delay:g} s",
                level="warning",
                data={"attempt": attempt, "of": attempts, "error": message},
            )
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _ensure_repo(api: HfApi, revision: str, *, private: bool, retry: dict[str, Any]) -> Any:
    """Create the repository (and the branch ``revision``) unless they exist; its URL."""
    repo_id = retry["repo_id"]
    repo = _with_retries(
        lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"),
        what="creating the Hub repository",
        **retry,
    )
    if revision != "main":
        _with_retries(
            lambda: api.create_branch(repo_id, branch=revision, exist_ok=True),
            what=f"creating branch '{revision}'",
            **retry,
        )
    return repo


def publish_artifact(
    *,
    folder: Path,
    output: dict[str, Any],
    token: str,
    endpoint: str,
    commit_message: str,
    reporter: Reporter,
    attempts: int = 4,
    backoff: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create ``output["hub_repo"]`` if needed and commit every file of ``folder`` to it.

    Returns what the job's metrics record: repository, revision, commit id and URL.
    """
    repo_id, revision = output["hub_repo"], output.get("revision") or "main"
    api = HfApi(endpoint=endpoint, token=token)
    retry: dict[str, Any] = {
        "repo_id": repo_id,
        "attempts": attempts,
        "backoff": backoff,
        "reporter": reporter,
        "secret": token,
        "sleep": sleep,
    }
    repo = _ensure_repo(api, revision, private=bool(output.get("private", True)), retry=retry)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    reporter.event(
        "uploading to the Hub",
        data={
            "repo_id": repo_id,
            "revision": revision,
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
        },
    )
    commit = _with_retries(
        lambda: api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            revision=revision,
            commit_message=commit_message,
            repo_type="model",
        ),
        what="uploading to the Hub",
        **retry,
    )
    result = {
        "repo_id": repo_id,
        "revision": revision,
        "url": str(repo),
        "commit_oid": commit.oid,
        "commit_url": commit.commit_url,
    }
    reporter.event("pushed to the Hub", data=result)
    return result
