"""Domain errors raised by services; ``app.main`` turns them into JSON responses.

Every error body has the same shape: ``{"error": {"code": ..., "message": ..., "details": ...}}``
with a message that says what to fix.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AppError",
    "BadRequest",
    "Conflict",
    "NotFound",
    "ServiceUnavailable",
    "Unauthorized",
    "UnprocessableInput",
]


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
