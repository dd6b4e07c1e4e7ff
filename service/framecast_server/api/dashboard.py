"""The dashboard: a single page at ``GET /`` that watches every session of this server.

Plain HTML, CSS and JavaScript shipped in the package (``static/``), with hls.js vendored beside
them to play a session's live HLS output in the page; nothing is fetched from anywhere but this
server, and the Content-Security-Policy says so to the browser. The page itself
holds no data and needs no API key; it reads ``/v1/sessions`` and the previews with the key the
user pastes into it (kept in the tab's sessionStorage, sent as ``Authorization: Bearer``).

The same routes serve the JavaScript client (``client/js``: ``/static/framecast.js`` and the
modules it imports) so that a page on this server can ``import`` it, and, with
``FRAMECAST_EXAMPLES=1``, its example page at ``/examples/canvas``. That page is one HTML file
with its script inline; the policy allows exactly that script and style by their SHA-256
hashes, nothing else inline.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from framecast_server.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The JavaScript client: inside the package once installed (pyproject maps client/js there), in
#: the source checkout under ``pip install -e``; the examples only in a source checkout.
_ROOT = Path(__file__).resolve().parents[3]
JS_DIR = next(
    (d for d in (Path(__file__).resolve().parents[1] / "js", _ROOT / "client" / "js") if d.is_dir()),
    _ROOT / "client" / "js",
)
EXAMPLES_DIR = _ROOT / "examples"

#: The files served under /static/, with their media types and folders; nothing else is (no path walking).
STATIC_FILES = {
    "dashboard.html": ("text/html; charset=utf-8", STATIC_DIR),
    "dashboard.css": ("text/css; charset=utf-8", STATIC_DIR),
    "dashboard.js": ("text/javascript; charset=utf-8", STATIC_DIR),
    # hls.js (its light build: HLS without DRM and subtitles), vendored from npm: the page plays a
    # session's HLS output with nothing fetched from anywhere else. Version and licence: VENDORED.
    "hls.light.min.js": ("text/javascript; charset=utf-8", STATIC_DIR),
    # The JavaScript client: framecast.js and the modules it imports by relative URL.
    **{
        name: ("text/javascript; charset=utf-8", JS_DIR)
        for name in ("framecast.js", "writer.js", "media.js", "protocol.js", "errors.js")
    },
}

#: What is vendored into static/, from where, and its licence (beside it).
VENDORED = {"hls.light.min.js": ("hls.js 1.7.4 (npm, dist/hls.light.min.js)", "hls.js-LICENSE.txt (Apache-2.0)")}

#: The example pages served at /examples/{name} with FRAMECAST_EXAMPLES=1.
EXAMPLE_PAGES = {"canvas": "browser_canvas.html"}

#: Same-origin only: scripts, styles, fetches and images (previews are blob: URLs of fetched JPEGs),
#: and media from blob: URLs (hls.js feeds the player through Media Source Extensions).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with the package; revalidate (ETag) rather than guess a lifetime.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


class _NoSuchFile(ApiError):
    status = 404
    code = "not_found"


def _file(name: str) -> FileResponse:
    media_type, folder = STATIC_FILES.get(name, (None, STATIC_DIR))
    path = folder / name
    if media_type is None or not path.is_file():
        raise _NoSuchFile(f"no static file {name!r}")
    return FileResponse(path, media_type=media_type, headers=HEADERS)


@router.get("/")
async def dashboard() -> FileResponse:
    """The dashboard page."""
    return _file("dashboard.html")


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """The dashboard's script and style sheet, and the JavaScript client."""
    return _file(name)


def _inline_hashes(html: str, tag: str) -> str:
    """CSP sources allowing exactly the inline ``<tag>`` blocks of ``html``, by their hashes."""
    blocks = re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", html, flags=re.S)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'" for block in blocks if block
    )


@router.get("/examples/{name}")
async def example(name: str, request: Request) -> HTMLResponse:
    """An example page of the JavaScript client (FRAMECAST_EXAMPLES=1), under the dashboard's policy
    plus the hashes of its own inline script and style."""
    page = EXAMPLE_PAGES.get(name)
    if not request.app.state.settings.examples or page is None or not (EXAMPLES_DIR / page).is_file():
        raise _NoSuchFile(f"no example page {name!r} (the server serves examples with FRAMECAST_EXAMPLES=1)")
    html = (EXAMPLES_DIR / page).read_text()
    policy = CONTENT_SECURITY_POLICY.replace(
        "script-src 'self'", f"script-src 'self' {_inline_hashes(html, 'script')}"
    ).replace("style-src 'self'", f"style-src 'self' {_inline_hashes(html, 'style')}")
    return HTMLResponse(html, headers={**HEADERS, "Content-Security-Policy": policy})
