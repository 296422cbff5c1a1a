"""What every request body of the API shares: unknown fields refused, Hub id syntax."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

__all__ = ["HUB_ID", "Input"]

# org/name, as the Hub allows: letters, digits, '-', '_', '.', at most 96 characters each.
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.\-]{0,95}/)?[A-Za-z0-9][\w.\-]{0,95}$")


class Input(BaseModel):
    """A request body (or part of one): a field it does not define is an error."""

    model_config = ConfigDict(extra="forbid")
