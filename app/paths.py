"""Local paths in job bodies: resolved against the allowed roots, never outside them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from slimforge.app.errors import UnprocessableInput
from slimforge.app.settings import Settings


def resolve_local_path(
    settings: Settings, raw: str, *, field: str, kind: Literal["file", "folder"] | None = None
) -> Path:
    """Resolve ``raw`` (relative to the first allowed root) and check it stays inside a root
    and, with ``kind``, that it is a file or a folder (an empty path is the root, a folder).

    Symlinks are resolved first, so a link that points outside the roots is refused too.
    Raises UnprocessableInput (422) naming ``field``.
    """
    roots = settings.local_roots or []
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise UnprocessableInput(
            f"{field}: '{raw}' is outside the folders this server may read ({allowed}); "
            "move the file there or ask the operator to add its folder to SLIMFORGE_LOCAL_ROOTS",
            details={"field": field},
        )
    if not resolved.exists():
        raise UnprocessableInput(
            f"{field}: '{raw}' does not exist on the server (looked for {resolved})",
            details={"field": field},
        )
    if kind == "file" and not resolved.is_file():
        raise UnprocessableInput(
            f"{field}: '{raw}' is a folder on the server ({resolved}), not a file; give the path"
            " of a file in it",
            details={"field": field},
        )
    if kind == "folder" and not resolved.is_dir():
        raise UnprocessableInput(
            f"{field}: '{raw}' is a file on the server ({resolved}), not a folder; give the"
            " folder that holds it",
            details={"field": field},
        )
    return resolved
