"""Permit applications in and out."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: EHDS Art. 53(1) purposes (policies/permits checks them again on submission).
Purpose = Literal["public_health", "policy_and_regulation", "official_statistics",
                  "education", "scientific_research", "improving_care"]
Form = Literal["anonymised", "pseudonymised"]
UserId = Annotated[str, Field(min_length=3, max_length=320)]
DatasetId = Annotated[str, Field(min_length=3, max_length=300)]


#: Keys of an application that are comments (`spe permit template` writes them): dropped
#: before validation, so a commented application is accepted as it is.
COMMENT_PREFIX = "//"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _without_comments(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: v for k, v in data.items()
                if not (isinstance(k, str) and k.startswith(COMMENT_PREFIX))}
    return data


class ApplicationIn(_In):
    organisation: str = Field(min_length=1, max_length=255)
    title: str = Field(min_length=3, max_length=300)
    summary: str = Field(min_length=1, max_length=10_000)
    purpose: Purpose = "scientific_research"
    declaration: bool = False  # that no use prohibited by EHDS Art. 54 is intended
    legal_basis: str = Field(default="", max_length=300)
    form: Form = "anonymised"
    justification: str = Field(default="", max_length=10_000)
    ethics_reference: str = Field(default="", max_length=200)
    start_date: date
    end_date: date
    members: list[UserId] = Field(default_factory=list, max_length=50)  # besides the applicant
    datasets: list[DatasetId] = Field(default_factory=list, max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _comments(cls, data: Any) -> Any:
        return _without_comments(data)

    @model_validator(mode="after")
    def _period(self) -> ApplicationIn:
        if self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class ApplicationPatch(_In):
    organisation: str | None = Field(default=None, min_length=1, max_length=255)
    title: str | None = Field(default=None, min_length=3, max_length=300)
    summary: str | None = Field(default=None, min_length=1, max_length=10_000)
    purpose: Purpose | None = None
    declaration: bool | None = None
    legal_basis: str | None = Field(default=None, max_length=300)
    form: Form | None = None
    justification: str | None = Field(default=None, max_length=10_000)
    ethics_reference: str | None = Field(default=None, max_length=200)
    start_date: date | None = None
    end_date: date | None = None
    members: list[UserId] | None = Field(default=None, max_length=50)
    datasets: list[DatasetId] | None = Field(default=None, max_length=50)


class ReviewIn(_In):
    decision: Literal["approve", "reject", "changes"]
    reason: str = Field(default="", max_length=5_000)
    conditions: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _reasoned(self) -> ReviewIn:
        if self.decision != "approve" and not self.reason.strip():
            raise ValueError("a rejection or a request for changes needs a reason")
        return self


class AmendmentIn(_In):
    """New team members and/or datasets for an active permit (EHDS Art. 68(8))."""

    members: list[UserId] = Field(default_factory=list, max_length=50)
    datasets: list[DatasetId] = Field(default_factory=list, max_length=50)
    reason: str = Field(min_length=1, max_length=5_000)

    @model_validator(mode="after")
    def _something(self) -> AmendmentIn:
        if not self.members and not self.datasets:
            raise ValueError("an amendment adds a member or a dataset")
        return self


class DecisionIn(_In):
    reason: str = Field(default="", max_length=5_000)


class DatasetOut(BaseModel):
    dataset: str
    node_id: str


class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    revision: int
    node_id: str
    decision: str
    reason: str
    conditions: list[str]
    reviewer: str
    at: datetime


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    actor: str
    action: str
    from_status: str
    to_status: str
    reason: str


class PermitOut(BaseModel):
    id: str
    status: str  # effective: an issued permit is active, not_yet_active or expired
    applicant: str
    members: list[str]
    organisation: str
    title: str
    summary: str
    purpose: str
    declaration: bool
    legal_basis: str
    form: str
    justification: str
    ethics_reference: str
    start_date: date
    end_date: date
    revision: int
    datasets: list[DatasetOut]
    institutions: list[str]
    reviews: list[ReviewOut]  # of the current revision
    waiting_for: list[str]  # institutions yet to review this revision
    conditions: list[str]
    decision_reason: str
    events: list[EventOut]
    created_at: datetime
    updated_at: datetime
    amendment: dict | None = None  # pending: members, datasets, institutions, reason
    pushed: dict[str, str] = Field(default_factory=dict)  # node -> outcome of the last push


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    message: str
    created_at: datetime
    read_at: datetime | None
    permit: str | None = None
