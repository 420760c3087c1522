"""A node's signed audit checkpoints, as the hub pulls them to keep as their witness.

`GET /api/v1/audit/checkpoints?after=SEQ` at a node, with a context the hub signed for
`hub:audit-witness` whose `qh` is `witness_query_hash(after)`: the node's checkpoints of
heads after entry SEQ, oldest first, at most MAX_CHECKPOINTS. Each is the node's own
signature (spe.audit.checkpoints), so the hub stores nothing it cannot check.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

CHECKPOINTS_PATH = "/api/v1/audit/checkpoints"
#: Who the hub signs for when it pulls checkpoints: no user, a role no user needs.
WITNESS, WITNESS_ROLE = "hub:audit-witness", "audit-witness"
#: The hub's audit action for a checkpoint it witnessed (details: seq, hash).
WITNESSED = "audit.witnessed"
MAX_CHECKPOINTS = 100


def witness_query_hash(after: int) -> str:
    return hashlib.sha256(f"audit-checkpoints:after={after}".encode()).hexdigest()


class SignedCheckpoint(BaseModel):
    body: str = Field(max_length=400_000)  # up to 20,000 entries' digests
    signature: str = Field(max_length=200)
    cert: str = Field(max_length=8_000)


class NodeCheckpoints(BaseModel):
    node_id: str = Field(max_length=120)
    checkpoints: list[SignedCheckpoint] = Field(default_factory=list,
                                                max_length=MAX_CHECKPOINTS)
