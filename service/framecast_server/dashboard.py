"""The dashboard: a single page at ``GET /`` that watches every session of this server.

Plain HTML, CSS and JavaScript shipped in the package (``static/``); nothing is fetched from
anywhere but this server, and the Content-Security-Policy says so to the browser. The page itself
holds no data and needs no API key; it reads ``/v1/sessions`` and the previews with the key the
user pastes into it (kept in the tab's sessionStorage, sent as ``Authorization: Bearer``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from .errors import ServerError

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: The files served under /static/, with their media types; nothing else is (no path walking).
STATIC_FILES = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}

#: Same-origin only: scripts, styles, fetches and images (previews are blob: URLs of fetched JPEGs).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with the package; revalidate (ETag) rather than guess a lifetime.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


class _NoSuchFile(ServerError):
    status = 404
    code = "not_found"


def _file(name: str) -> FileResponse:
    media_type = STATIC_FILES.get(name)
    path = STATIC_DIR / name
    if media_type is None or not path.is_file():
        raise _NoSuchFile(f"no static file {name!r}")
    return FileResponse(path, media_type=media_type, headers=HEADERS)


@router.get("/")
async def dashboard() -> FileResponse:
    """The dashboard page."""
    return _file("dashboard.html")


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """The dashboard's script and style sheet."""
    return _file(name)
