"""The catalogue of compression methods and their parameter schemas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.deps import ReadPrincipalDep
from app.errors import error_responses
from compression.configs import method_descriptions

router = APIRouter(
    prefix="/v1/methods", tags=["methods"], responses=error_responses(401, 403, 429, 503)
)


class MethodOut(BaseModel):
    name: str
    summary: str
    description: str
    parameters_schema: dict[str, Any]


@router.get("", response_model=list[MethodOut])
def list_methods(principal: ReadPrincipalDep) -> list[MethodOut]:
    """Each method's name, description and the JSON schema of its parameters."""
    return [MethodOut.model_validate(m) for m in method_descriptions()]
