"""The airlock review API. Thin: the door (policies/authz) checks the role, `Airlock` asks
policies/airlock for each step."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from spe.airlock.review.schemas import RequestOut, ReviewIn, researcher_view
from spe.airlock.review.service import Airlock
from spe.web import Caller, DbSession
from spe.web.responses import refusals

router = APIRouter(prefix="/api/v1/airlock", tags=["airlock"],
                   responses=refusals(400, 409))


def airlock(request: Request) -> Airlock:
    ctx = request.app.state.ctx
    return Airlock(policy=ctx.policy, sessions=ctx.sessions, audit=ctx.audit)


@router.get("/requests", response_model=list[RequestOut])
def list_requests(caller: Caller, session: DbSession, request: Request) -> list[RequestOut]:
    """An output checker's queue of pending requests; a researcher's own requests (their
    files named once released, `researcher_view`)."""
    return [researcher_view(r, caller) for r in airlock(request).visible(session, caller)]


@router.get("/requests/{rid}", response_model=RequestOut)
def show(rid: str, caller: Caller, session: DbSession, request: Request) -> RequestOut:
    """The files with their automatic verdicts and reasons, and the reviews so far (to a
    party of the request, only what `researcher_view` shows)."""
    return researcher_view(airlock(request).view(session, caller, rid), caller)


@router.post("/requests/{rid}/reviews", response_model=RequestOut)
def review(rid: str, body: ReviewIn, caller: Caller, session: DbSession,
           request: Request) -> RequestOut:
    """Approve or reject; two different checkers' approvals release, any reject rejects.
    A checker who has already reviewed this round is refused (409), as is a review of a
    request no longer pending (released, rejected, withheld or closed)."""
    done = airlock(request).review(session, caller, rid, body.decision, body.reason)
    return researcher_view(done, caller)


@router.get("/requests/{rid}/inspect/{path:path}")
def inspect(rid: str, path: str, caller: Caller, session: DbSession,
            request: Request) -> Response:
    """A stored file (`path`: its `<site>/<path>` name) of a pending request, for an output
    checker to review: plain text
    (a figure as its bytes), shown inline, never run (a sandboxed, scriptless response)."""
    file, data = airlock(request).inspect(session, caller, rid, path)
    media = {"png": "image/png", "pdf": "application/pdf"}.get(
        file.path.rsplit(".", 1)[-1].lower(), "text/plain; charset=utf-8")
    return Response(data, media_type=media, headers={
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "X-Checksum-SHA256": file.sha256 or "",
    })


@router.get("/requests/{rid}/files/{path:path}")
def download(rid: str, path: str, caller: Caller, session: DbSession,
             request: Request) -> Response:
    """A released file, as an attachment (only the requester or a member of the permit).
    `path` is the file's `name`, `<site>/<path>`; it is saved as `<site>_<path>` (each
    folder's `/` an `_`), so files of the same name from two sites stay apart."""
    file, data = airlock(request).download(session, caller, rid, path)
    name = file.name.replace("/", "_")
    fallback = "".join(c if c.isascii() and c.isalnum() or c in "._-" else "_" for c in name)
    return Response(data, media_type="application/octet-stream", headers={
        "Content-Disposition": f"attachment; filename=\"{fallback}\"; "
                               f"filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "X-Checksum-SHA256": file.sha256 or "",
    })
