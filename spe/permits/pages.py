"""The permit pages: applying for a data permit, the institutions' review queues and the
access body's decisions, over the permit API (`spe/permits/endpoints.py`).

One static HTML shell whose vanilla JS picks its view from the address: `/permits` (my
applications, my institution's review queue, the access body's decisions, notifications),
`/permits/new?dataset=<identifier>` and `/permits/edit/<pid>` (the application form),
`/permits/view/<pid>` (one application, its reviews, history and the actions the
signed-in person may try). Served as every page is (spe/web/pages.py); everything from
the API is written by the JS as text, never as HTML. The pages decide nothing: every step
is the API's (policies/permits), and a refusal is shown with its reason.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from spe.web.pages import shell_page

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where spe/app.py mounts STATIC_DIR (the page's <link> and <script> point here).
STATIC_PATH = "/permits/static"

router = APIRouter(include_in_schema=False)


def _page(request: Request) -> HTMLResponse:
    return shell_page(request, STATIC_DIR / "permits.html")


@router.get("/permits")
def list_page(request: Request) -> HTMLResponse:
    """My applications; an approver's review queue; the access body's decisions."""
    return _page(request)


@router.get("/permits/new")
def new_page(request: Request) -> HTMLResponse:
    """The application form; `?dataset=<identifier>` (from the catalogue) prefills it."""
    return _page(request)


@router.get("/permits/edit/{pid}")
def edit_page(request: Request, pid: str) -> HTMLResponse:
    """The application form for a draft (or one sent back for changes)."""
    return _page(request)


@router.get("/permits/view/{pid}")
def view_page(request: Request, pid: str) -> HTMLResponse:
    """One application or permit; the JS reads the id from the address, so an unknown or
    unreadable one is the API's 404 or 403, shown with its reason in the page."""
    return _page(request)


__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
