"""The airlock's review page for output checkers, over the airlock API
(`spe/airlock/review/endpoints.py`).

One static HTML shell whose vanilla JS picks its view from the address: `/airlock` (an
output checker's queue of pending requests; a researcher's own requests) and
`/airlock?request=<id>` (one request: its files with the automatic verdicts, reasons and
notes, each stored file's content to read, the reviews so far, and approve or reject).
Served as every page is (spe/web/pages.py); everything from the API, a file's content
included, is written by the JS as text, never as HTML. The page decides nothing: every
step is the API's (policies/airlock), and a refusal is shown with its reason.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from spe.web.pages import shell_page

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where spe/app.py mounts STATIC_DIR (the page's <link> and <script> point here).
STATIC_PATH = "/airlock/static"

router = APIRouter(include_in_schema=False)


@router.get("/airlock")
def review_page(request: Request) -> HTMLResponse:
    """The queue, and `?request=<id>`: one request to review. The JS reads the id from the
    address, so an unknown or unreadable one is the API's 404 or 403, shown in the page."""
    return shell_page(request, STATIC_DIR / "airlock.html")


__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
