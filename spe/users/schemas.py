from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class MeOut(BaseModel):
    id: str
    subject: str
    issuer: str
    roles: list[str]
    institution: str | None
    name: str | None


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    issuer: str
    subject: str
    name: str | None
    institution: str | None
    roles: str
    first_seen: datetime
    last_seen: datetime


class SuspensionIn(BaseModel):
    suspended: bool
    reason: str = Field(default="", max_length=500)


class SuspensionOut(BaseModel):
    user: str  # the user's id as tokens and contexts name it (subject@issuer)
    suspended: bool
    epoch: int
    # node -> "delivered", or why not: a node that missed the list refuses every context
    # signed after this change until a later push reaches it.
    nodes: dict[str, str] = Field(default_factory=dict)
