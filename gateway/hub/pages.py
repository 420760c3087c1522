"""The hub's web pages: a federated query builder over `POST /api/v1/query`, the jobs
page over `/api/v1/jobs` (send code to the data under a permit, follow it at each node,
and fetch its outputs once the airlock has released them), the code review page over
`/api/v1/code-reviews` (an institution's approvers vet job code), and the federated runs page
over `/api/v1/fed/runs` (start a ComBat harmonisation, follow a run round by round).

One static HTML shell per page (served as every page is: spe/web/pages.py) whose vanilla
JS builds the request, sends it with the researcher's bearer token and shows each
institution's answer, as text, never as HTML.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from spe.web.pages import shell_page

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where spe/app.py mounts STATIC_DIR (the pages' <link> and <script> point here; the
#: jobs and federated runs pages' files live in the same folder, so under the same path).
STATIC_PATH = "/query/static"

router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str) -> HTMLResponse:
    return shell_page(request, STATIC_DIR / name)


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


@router.get("/code-reviews")
def code_reviews_page(request: Request) -> HTMLResponse:
    """An institution's approvers: the job code awaiting their review, and
    `?node=&permit=&code=`: one code's files and diff, approved or rejected with a reason.
    The JS reads the address, so another institution's code is the API's 403, shown."""
    return _page(request, "code-reviews.html")


@router.get("/fed")
def fed_page(request: Request) -> HTMLResponse:
    """Start a ComBat run under a permit, my federated runs, and `?run=<id>`: one run's
    rounds (each node's answer in its gate's words), its metrics' curves, the privacy spent
    and its result's airlock request. The JS reads the id from the address, so an unknown
    or another's run is the API's 404 or 403, shown with its reason in the page."""
    return _page(request, "fed.html")


__all__ = ["STATIC_DIR", "STATIC_PATH", "router"]
