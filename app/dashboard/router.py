"""The dashboard: ``/`` serves the page, ``/dashboard/<file>`` its script and style sheet.

The files themselves need no authentication: the page asks for an API key and calls the JSON
API with ``Authorization: Bearer``. Nothing is fetched from outside the service, and the
Content-Security-Policy says so to the browser as well.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from slimforge.app.errors import NotFound

__all__ = ["STATIC", "router"]

STATIC = Path(__file__).resolve().parent / "static"

# The only files served, with their content types: a fixed list, so no path is ever built
# from the request.
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data: blob:; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The dashboard page."""
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS
    )


@router.get("/dashboard/{name}")
def asset(name: str) -> FileResponse:
    """The page's script and style sheet."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no dashboard file '{name}'")
    return FileResponse(STATIC / name, media_type=media_type, headers=_HEADERS)
