from __future__ import annotations

from pydantic import BaseModel, Field


class NodeIn(BaseModel):
    node_id: str = Field(min_length=1, max_length=253,
                         pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
    url: str = Field(min_length=8, max_length=2000)
    reason: str = Field(default="", max_length=500)


class NodeOut(BaseModel):
    node_id: str
    url: str
    # "environment" (SPE_FEDERATION_NODES) or "admin" (added at the running centre)
    source: str


class RemovedOut(BaseModel):
    node_id: str
    removed: bool
    # The certificates revoked with it (serials), and where the new revocation list went.
    revoked: list[str] = Field(default_factory=list)
    crl_pushed: dict[str, str] = Field(default_factory=dict)
