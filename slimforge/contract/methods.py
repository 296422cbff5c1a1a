"""The method catalogue of ``GET /v1/methods``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["MethodOut"]


class MethodOut(BaseModel):
    """One compression method: its name, descriptions and the JSON schema of its parameters."""

    name: str
    summary: str
    description: str
    parameters_schema: dict[str, Any]
