"""The home page at `/`: what the SPE does in two lines, a link to every page for each
role, and a sign-in that the shared navigation (spe/web/pages.py, nav.js) then shows with
what waits for that person. A static shell like every page; its JS reads only /me."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from spe.web.pages import STATIC_DIR, shell_page

router = APIRouter(include_in_schema=False)


@router.get("/")
def home_page(request: Request) -> HTMLResponse:
    return shell_page(request, STATIC_DIR / "home.html")


__all__ = ["router"]
