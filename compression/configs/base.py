"""The base of every method's parameter model: unknown fields are errors, not ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["_MethodBase"]


class _MethodBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
