"""The SDK's exceptions: one base class, the API's JSON errors, and job outcomes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slimforge.contract.jobs import JobOut

__all__ = [
    "APIError",
    "AuthenticationError",
    "ChecksumMismatch",
    "ConnectionFailed",
    "JobCancelled",
    "JobFailed",
    "SlimforgeError",
    "WaitTimeout",
]


class SlimforgeError(Exception):
    """Base class of every error the SDK raises."""


class ConnectionFailed(SlimforgeError):
    """The server could not be reached (refused, DNS, TLS, timeout), after the retries."""

    def __init__(self, url: str, cause: BaseException):
        reason = str(cause) or type(cause).__name__
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.cause = cause


class APIError(SlimforgeError):
    """An error response of the API: ``{"error": {"code", "message", "details"}}``."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(f"{message} (HTTP {status_code}, {code})")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


class AuthenticationError(APIError):
    """HTTP 401: the API key is missing, unknown or revoked."""


class JobFailed(SlimforgeError):
    """The job ended with status ``failed``; ``job.error`` says why."""

    def __init__(self, job: JobOut):
        stage = f" at stage {job.stage}" if job.stage else ""
        super().__init__(f"job {job.id} failed{stage}: {job.error or 'no error message'}")
        self.job = job


class JobCancelled(SlimforgeError):
    """The job ended with status ``cancelled``."""

    def __init__(self, job: JobOut):
        super().__init__(f"job {job.id} was cancelled")
        self.job = job


class WaitTimeout(SlimforgeError, TimeoutError):
    """The job had not ended when the wait's timeout ran out (a :class:`TimeoutError`)."""

    def __init__(self, job_id: str, timeout: float, status: str | None = None):
        state = f" (status {status})" if status else ""
        super().__init__(f"job {job_id} did not end within {timeout:g} s{state}")
        self.job_id = job_id
        self.timeout = timeout
        self.status = status


class ChecksumMismatch(SlimforgeError):
    """A downloaded file's sha256 (or size) differs from the artifact's manifest."""

    def __init__(self, path: str, expected: str, actual: str):
        super().__init__(
            f"checksum mismatch for '{path}': manifest says {expected}, downloaded {actual}"
        )
        self.path = path
        self.expected = expected
        self.actual = actual
