"""The revocation list the hub sends every node (`PUT /api/v1/crl`): the CA's CRL in PEM.
A node keeps it only if the federation CA signed it and it is newer than its own."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

CRL_PATH = "/api/v1/crl"


class CrlPush(BaseModel):
    crl: str = Field(max_length=4 * 1024 * 1024)

    def digest(self) -> str:
        """What the hub's context for this push names (its `qh`)."""
        return hashlib.sha256(self.crl.encode()).hexdigest()


class CrlHeld(BaseModel):
    number: int
    outcome: str  # "stored" | "held"


__all__ = ["CRL_PATH", "CrlHeld", "CrlPush"]
