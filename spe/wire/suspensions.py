"""The central suspension list the hub pushes to every node (`PUT /api/v1/suspensions`).

`epoch` grows with every suspension or reinstatement at the centre; each hub context
carries the epoch it was signed at (`sus`), so a node whose list is older than the context
(a push it missed) refuses rather than trusts a stale list.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import BaseModel, Field

SUSPENSIONS_PATH = "/api/v1/suspensions"


class SuspensionList(BaseModel):
    epoch: int = Field(ge=0, le=2**62)
    users: list[Annotated[str, Field(max_length=520)]] = Field(  # Principal ids
        default_factory=list, max_length=100_000)

    def digest(self) -> str:
        """What the push's hub context names (its `qh`): the SHA-256 of this JSON."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


__all__ = ["SUSPENSIONS_PATH", "SuspensionList"]
