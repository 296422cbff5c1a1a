"""Domain errors raised by services; ``slimforge.app.main`` turns them into JSON responses.

Every error body has the same shape: ``{"error": {"code": ..., "message": ..., "details": ...}}``
with a message that says what to fix, and ``request_id`` (also the ``X-Request-ID`` header)
to quote when asking the operator. ``error_responses`` declares them in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "AppError",
    "BadRequest",
    "Conflict",
    "ErrorResponse",
    "Forbidden",
    "NotFound",
    "ServiceUnavailable",
    "Unauthorized",
    "UnprocessableInput",
    "error_responses",
]


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. 'not_found'.")
    message: str = Field(description="What went wrong and what to fix.")
    details: Any = None
    request_id: str | None = Field(default=None, description="The request's X-Request-ID.")


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer of the ``/v1`` API."""

    error: ErrorInfo


_STATUS_TEXT = {
    400: "Bad request",
    401: "Missing, malformed or revoked API key",
    403: "The API key lacks the scope this route needs",
    404: "No such resource for this tenant",
    409: "Conflict with the resource's current state",
    413: "Request body too large",
    416: "Range outside the file",
    422: "Invalid input",
    429: "Rate limit or quota exceeded (see Retry-After)",
    503: "Database or queue unavailable (see Retry-After)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring these error statuses with the error body."""
    return {s: {"model": ErrorResponse, "description": _STATUS_TEXT[s]} for s in statuses}


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(AppError):
    pass


class UnprocessableInput(AppError):
    status_code = 422
    code = "invalid_input"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str, **kwargs: Any):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"}, **kwargs)


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class ServiceUnavailable(AppError):
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **kwargs: Any):
        super().__init__(message, headers={"Retry-After": str(retry_after)}, **kwargs)
