"""The catalogue's web pages: two static HTML shells whose vanilla JS calls the JSON API.

No templating engine and no build step (the pages must work offline and be readable as
they are). The server only fills in the path prefix the app is mounted under, so the
pages' absolute links still work behind a proxy that sets `root_path`. Nothing from the
database is rendered here: the browser fetches it, and the JS writes it as text, never as
HTML, so a curated title cannot inject markup.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where spe/app.py mounts STATIC_DIR (the pages' <link> and <script> point here).
STATIC_PATH = "/catalogue/static"

# Same-origin everything: the pages load only their own CSS/JS and talk only to this API.
# A token pasted into the curation form can then only ever be sent back to this origin.
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


def _page(request: Request, name: str) -> HTMLResponse:
    root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    return HTMLResponse(_shell(name).replace("%ROOT%", root), headers=_HEADERS)


@router.get("/catalogue")
def search_page(request: Request) -> HTMLResponse:
    """Free-text and faceted search over the catalogue."""
    return _page(request, "search.html")


@router.get("/catalogue/datasets/{identifier:path}")
def dataset_page(request: Request, identifier: str) -> HTMLResponse:
    """One dataset; the JS reads the identifier from the URL, so an unknown one is a 404
    shown in the page (from the API), not a bare error page."""
    return _page(request, "dataset.html")


__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
