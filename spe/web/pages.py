"""The web pages' shell, shared by the catalogue, query, jobs, permit and airlock pages.

Each page is a static HTML file whose vanilla JS calls the JSON API: no templating engine
and no build step, so the pages work offline and read as they are. The server only fills
in the path prefix the app is mounted under (`%ROOT%`), so the pages' absolute links still
work behind a proxy that sets `root_path`. Nothing from the database is rendered here: the
browser fetches it and the JS writes it as text, never as HTML.

The CSS and JS every page shares are in STATIC_DIR, which spe/app.py mounts at STATIC_PATH.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where spe/app.py mounts STATIC_DIR (each page's <head> loads common.css and common.js).
STATIC_PATH = "/static/common"

# Same-origin everything: the pages load only this service's CSS/JS and talk only to its
# API, so a token pasted into one can only ever be sent back to this origin.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


@cache
def _shell(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def shell_page(request: Request, path: Path) -> HTMLResponse:
    """The HTML file at `path`, its `%ROOT%` the prefix the app is mounted under."""
    root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    return HTMLResponse(_shell(path).replace("%ROOT%", root), headers=_HEADERS)


__all__ = ["STATIC_DIR", "STATIC_PATH", "shell_page"]
