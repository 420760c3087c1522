"""The hub's answer: every node with its status and time, and the combined counts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from spe.wire.query import Cell, NodeAnswer

NodeStatus = Literal["answered", "suppressed", "refused", "timed_out", "unreachable", "error"]


class NodeResult(BaseModel):
    node_id: str
    status: NodeStatus
    ms: float  # time the hub waited for this node
    answer: NodeAnswer | None = None
    reason: str | None = None  # why not answered (refused, unreachable, ...)


class FederatedAnswer(BaseModel):
    query_hash: str
    tier: str
    kind: str
    nodes: list[NodeResult]
    # Sums of what the nodes showed; None when too few sites answered (min_sites). They
    # never include a suppressed figure, so nothing suppressed is found by subtraction.
    total: Cell | None = None
    cells: list[Cell] = Field(default_factory=list)
    exists: bool | None = None
    sites_answering: int
    min_sites: int
    notes: list[str] = Field(default_factory=list)
    # The statistics kinds: the pooled statistic (shapes in README, "Federated
    # statistics"), None when too few sites could contribute (`notes` say why).
    result: dict | None = None
