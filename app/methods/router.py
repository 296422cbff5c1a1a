"""The catalogue of compression methods and their parameter schemas."""

from __future__ import annotations

from fastapi import APIRouter

from slimforge.app.deps import ReadPrincipalDep
from slimforge.app.errors import error_responses
from slimforge.compression.configs import method_descriptions
from slimforge.contract.methods import MethodOut

router = APIRouter(
    prefix="/v1/methods", tags=["methods"], responses=error_responses(401, 403, 429, 503)
)


@router.get("", response_model=list[MethodOut])
def list_methods(principal: ReadPrincipalDep) -> list[MethodOut]:
    """Each method's name, description and the JSON schema of its parameters."""
    return [MethodOut.model_validate(m) for m in method_descriptions()]
