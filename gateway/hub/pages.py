"""The hub's web pages: a federated query builder over `POST /api/v1/query`, and the
jobs page over `/api/v1/jobs` (send code to the data under a permit, follow it at each
node, and fetch its outputs once the airlock has released them).

One static HTML shell per page whose vanilla JS builds the request, sends it with the
researcher's bearer token and shows each institution's answer. No templating engine and
no build step; the server only fills in the path prefix the app is mounted under
(`root_path`). The answers are written by the JS as text, never as HTML, and the pages
load nothing from elsewhere (a strict Content-Security-Policy), so a pasted token can only
ever be sent back to this origin.

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
#: Where spe/app.py mounts STATIC_DIR (the pages' <link> and <script> point here; the
#: jobs page's files live in the same folder, so under the same path).
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


def _page(request: Request, name: str) -> HTMLResponse:
    root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    return HTMLResponse(_shell(name).replace("%ROOT%", root), headers=_HEADERS)


@router.get("/query")
def query_page(request: Request) -> HTMLResponse:
    """The query builder; `?dataset=<identifier>` (from the catalogue) only adds a note:
    every institution is asked."""
    return _page(request, "query.html")


@router.get("/jobs")
def jobs_page(request: Request) -> HTMLResponse:
    """Submit a job under a permit, my jobs, and `?job=<id>`: one job at each node, with
    its outputs' airlock requests. The JS reads the id from the address, so an unknown or
    another's job is the API's 404 or 403, shown with its reason in the page."""
    return _page(request, "jobs.html")


__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
