"""The airlock's review page for output checkers, over the airlock API
(`spe/airlock/review/endpoints.py`).

One static HTML shell whose vanilla JS picks its view from the address: `/airlock` (an
output checker's queue of pending requests; a researcher's own requests) and
`/airlock?request=<id>` (one request: its files with the automatic verdicts, reasons and
notes, each stored file's content to read, the reviews so far, and approve or reject). No
templating engine and no build step; the server only fills in the path prefix the app is
mounted under (`root_path`). Everything from the API, a file's content included, is
written by the JS as text, never as HTML, and the page loads nothing from elsewhere (a
strict Content-Security-Policy), so a pasted token can only ever be sent back to this
origin. The page decides nothing: every step is the API's (policies/airlock), and a
refusal is shown with its reason.

The same small pieces as spe/permits/pages.py, kept apart on purpose: each package serves
its own page.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where spe/app.py mounts STATIC_DIR (the page's <link> and <script> point here).
STATIC_PATH = "/airlock/static"

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@cache
def _shell(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


@router.get("/airlock")
def review_page(request: Request) -> HTMLResponse:
    """The queue, and `?request=<id>`: one request to review. The JS reads the id from the
    address, so an unknown or unreadable one is the API's 404 or 403, shown in the page."""
    root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    return HTMLResponse(_shell("airlock.html").replace("%ROOT%", root), headers=_HEADERS)


__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
