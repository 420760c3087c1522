"""API documentation (/docs, /redoc, /openapi.json): served in development and test, not
in production, where it would map every route and schema for anyone who asks.

FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN and start them with an
inline script: on a machine without the internet, or under the pages' CSP (no inline
script, nothing from another origin), they stay blank. So both are turned off here and
served as every page is (spe/web/pages.py: the shared navigation, the same CSP), their
JavaScript and CSS from the `fastapi-offline` package (mounted at DOCS_STATIC_PATH) and
started by our own docs.js.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from spe.settings import Settings
from spe.web.pages import shell_page

#: Swagger UI's and ReDoc's bundles, as the package ships them.
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_STATIC_PATH = "/static/docs"
#: Our two pages and the script that starts Swagger UI or ReDoc in them.
PAGES_DIR = Path(__file__).resolve().parent / "docs_static"
PAGES_STATIC_PATH = "/static/docs-page"

_router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str, *, style_nonce: bool = False) -> HTMLResponse:
    # The shared navigation links the central service's pages: a node has none.
    return shell_page(request, PAGES_DIR / name, style_nonce=style_nonce,
                      nav=request.app.state.ctx.service == "central")


@_router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json (try a call with a bearer token: "Authorize")."""
    return _page(request, "docs.html")


@_router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over /openapi.json: the same document, for reading. ReDoc writes its CSS
    into <style> elements as it renders: they carry this answer's nonce (its `nonce`
    option), the one thing its CSP allows beyond the other pages'."""
    return _page(request, "redoc.html", style_nonce=True)


def api_docs_options(settings: Settings) -> dict[str, Any]:
    """FastAPI's arguments for the documentation routes of an app run with `settings`:
    FastAPI's own pages never (install_api_docs serves ours), the OpenAPI document
    outside production."""
    if settings.environment == "production":
        return {"docs_url": None, "redoc_url": None, "openapi_url": None}
    return {"docs_url": None, "redoc_url": None}


def install_api_docs(app: FastAPI) -> None:
    """/docs and /redoc with their assets from the package, where the app publishes its
    OpenAPI document (api_docs_options: not in production)."""
    if app.openapi_url is None:
        return
    app.include_router(_router)
    app.mount(DOCS_STATIC_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-static")
    app.mount(PAGES_STATIC_PATH, StaticFiles(directory=PAGES_DIR), name="docs-page-static")


__all__ = ["ASSETS_DIR", "DOCS_STATIC_PATH", "PAGES_DIR", "PAGES_STATIC_PATH",
           "api_docs_options", "install_api_docs"]
