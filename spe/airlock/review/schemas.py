"""What the airlock review API takes and gives."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from spe.airlock.report import Place


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
