"""What the airlock review API takes and gives."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from spe.airlock.report import Place

if TYPE_CHECKING:
    from spe.airlock.review.models import AirlockRequest
    from spe.identity import Principal


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    reason: str = Field("", max_length=4000)


class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    reviewer: str
    decision: str
    reason: str
    at: datetime


class FileOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    node_id: str  # the site that sent it
    path: str  # as the job wrote it, relative to its output folder
    name: str  # `<site>/<path>`: how it is downloaded (`.../files/<name>`) and saved
    size: int
    sha256: str | None
    kind: str
    verdict: str
    reasons: list[str]
    notes: list[str]
    places: list[Place] = Field(default_factory=list)  # where the reasons point
    stored: bool


class SiteOut(BaseModel):
    """One site's section of the request: its files are those whose `node_id` it is."""

    node_id: str
    at: datetime | None = None  # when its outputs arrived
    reasons: list[str] = Field(default_factory=list)  # its report-wide blocking reasons
    # What the site sent, in the hub's words: "collected", or for a part that did not
    # succeed "no outputs: the job failed; its log collected" (its log has a verdict; the
    # part's outputs, none).
    outcome: str | None = None


class RequestOut(BaseModel):
    """One job's outputs, a section per site (`sites`; `awaiting`: the sites whose part of
    the job has not ended yet). Reviews count in the current `review_round`; the earlier
    rounds' (`void_reviews`) were voided by a site's outputs arriving after them, which
    `review_note` says. A `closed` request kept nothing (every file blocked): its files
    and their reasons are shown to the requester, and nothing leaves."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    pid: str
    requester: str
    created_at: datetime
    decided_at: datetime | None
    state: str
    reasons: list[str]
    sites: list[SiteOut]
    awaiting: list[str]
    files: list[FileOut]
    review_round: int
    review_note: str | None
    reviews: list[ReviewOut]
    void_reviews: list[ReviewOut]


def request_out(request: AirlockRequest) -> RequestOut:
    current = [r for r in request.reviews if r.round == request.review_round]
    void = [r for r in request.reviews if r.round != request.review_round]
    return RequestOut.model_validate({
        "id": request.id, "job_id": request.job_id, "pid": request.pid,
        "requester": request.requester, "created_at": request.created_at,
        "decided_at": request.decided_at, "state": request.state,
        "reasons": list(request.reasons or []),
        "sites": [SiteOut.model_validate(s) for s in request.sites or []],
        "awaiting": list(request.awaiting or []),
        "files": [FileOut.model_validate(f) for f in request.files],
        "review_round": request.review_round, "review_note": request.review_note,
        "reviews": [ReviewOut.model_validate(r) for r in current],
        "void_reviews": [ReviewOut.model_validate(r) for r in void]})


def _closed_files(files: list[FileOut]) -> list[FileOut]:
    """The files of a closed request as its requester reads them: per site, numbered
    ("file 1", in the order of their names), each with the rules that blocked it. Nothing
    was reviewed by a person, so nothing the job chose is shown: not the names (a job can
    name a file after what it found, "SMALLGROUP_3.csv"), sizes or checksums. The automatic
    checks' reasons name the rule and the place, never what was found there
    (spe/airlock/report.py), so they are what the requester learns."""
    out, numbers = [], {}
    for f in files:
        numbers[f.node_id] = numbers.get(f.node_id, 0) + 1
        path = f"file {numbers[f.node_id]}"
        out.append(f.model_copy(update={
            "path": path, "name": f"{f.node_id}/{path}", "notes": [], "places": [],
            "size": 0, "sha256": None}))
    return out


def researcher_view(request: AirlockRequest, principal: Principal) -> RequestOut:
    """A request as `principal` may read it. Output checkers read everything (names,
    verdicts, reasons). Anyone else (the requester, a member of the permit) reads nothing
    the job computed before release: no file names, sizes, verdicts or automatic reasons,
    which a job can make say anything; once released, the released files (their names,
    sizes and checksums, to download them), and still none of the automatic reasons.
    A closed request (every file blocked) shows its files, numbered, with the rules that
    blocked them (`_closed_files`)."""
    out = request_out(request)
    if "output_checker" in principal.roles:
        return out
    if out.state == "closed":  # nothing was kept: the researcher learns why, per file
        return out.model_copy(update={"files": _closed_files(out.files)})
    released = [f.model_copy(update={"reasons": [], "notes": [], "places": []})
                for f in out.files if f.stored] if out.state == "released" else []
    return out.model_copy(update={"files": released, "reasons": [],
                                  "sites": [s.model_copy(update={"reasons": []})
                                            for s in out.sites]})
