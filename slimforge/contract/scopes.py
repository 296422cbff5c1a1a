"""API key scopes: ``read`` < ``submit`` < ``admin``; each scope includes the ones below it.

* ``read``: every GET (jobs, events, artifacts, methods, webhook deliveries, credentials status)
  and the Hub-compatible read routes.
* ``submit``: also create, cancel, publish and delete jobs.
* ``admin``: also set or remove credentials, the default webhook and its secret, and manage
  API keys.

Keys created without scopes, and keys from before scopes existed, are ``admin``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

__all__ = ["DEFAULT_SCOPES", "SCOPES", "Scope", "effective_scopes", "normalize_scopes"]

Scope = Literal["read", "submit", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)  # in rank order
DEFAULT_SCOPES: tuple[Scope, ...] = ("admin",)


def normalize_scopes(scopes: Iterable[str]) -> list[Scope]:
    """Deduplicated, in rank order; ``ValueError`` names an unknown scope."""
    wanted = {s.strip() for s in scopes if s.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(
            f"unknown scope(s) {', '.join(map(repr, unknown))}: use {', '.join(SCOPES)}"
        )
    return [s for s in SCOPES if s in wanted]


def effective_scopes(stored: str) -> frozenset[Scope]:
    """What a key stored with ``stored`` ("read,submit") may do: each scope and those below it.
    Unknown names (a hand-edited row) grant nothing."""
    granted = {s.strip() for s in stored.split(",")}
    top = max((SCOPES.index(s) for s in SCOPES if s in granted), default=-1)
    return frozenset(SCOPES[: top + 1])
