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

    path: str
    size: int
    sha256: str | None
    kind: str
    verdict: str
    reasons: list[str]
    notes: list[str]
    places: list[Place] = Field(default_factory=list)  # where the reasons point
    stored: bool


class RequestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    node_id: str
    pid: str
    requester: str
    created_at: datetime
    decided_at: datetime | None
    state: str
    reasons: list[str]
    files: list[FileOut]
    reviews: list[ReviewOut]


def researcher_view(request: AirlockRequest, principal: Principal) -> RequestOut:
    """A request as `principal` may read it. Output checkers read everything (names,
    verdicts, reasons). Anyone else (the requester, a member of the permit) reads nothing
    the job computed before release: no file names, sizes, verdicts or automatic reasons,
    which a job can make say anything; once released, the released files (their names,
    sizes and checksums, to download them), and still none of the automatic reasons."""
    out = RequestOut.model_validate(request)
    if "output_checker" in principal.roles:
        return out
    released = [f.model_copy(update={"reasons": [], "notes": []}) for f in out.files
                if f.stored] if out.state == "released" else []
    return out.model_copy(update={"files": released, "reasons": []})
