"""The hub's web page: a federated query builder over `POST /api/v1/query`.

One static HTML shell whose vanilla JS builds the query, sends it with the researcher's
bearer token and shows each institution's answer. No templating engine and no build step;
the server only fills in the path prefix the app is mounted under (`root_path`). The
answers are written by the JS as text, never as HTML, and the page loads nothing from
elsewhere (a strict Content-Security-Policy), so a pasted token can only ever be sent back
to this origin.

The same small pieces as catalogue/pages.py, kept here on purpose: the gateway does not
import the catalogue.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where spe/app.py mounts STATIC_DIR (the page's <link> and <script> point here).
STATIC_PATH = "/query/static"

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


@router.get("/query")
def query_page(request: Request) -> HTMLResponse:
    """The query builder; `?dataset=<identifier>` (from the catalogue) only adds a note:
    every institution is asked."""
    root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    return HTMLResponse(_shell("query.html").replace("%ROOT%", root), headers=_HEADERS)


__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
