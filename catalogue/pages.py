"""The catalogue's web pages: two static HTML shells whose vanilla JS calls the JSON API
(served as every page is: spe/web/pages.py). The JS writes what it fetches as text, never
as HTML, so a curated title cannot inject markup.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from spe.web.pages import shell_page

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where spe/app.py mounts STATIC_DIR (the pages' <link> and <script> point here).
STATIC_PATH = "/catalogue/static"

router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str) -> HTMLResponse:
    return shell_page(request, STATIC_DIR / name)


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
