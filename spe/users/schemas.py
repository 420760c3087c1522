from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


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
