"""The hub's federated query API (statistics tier for registered researchers)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.hub import service
from gateway.hub.schemas import FederatedAnswer
from spe.web import Caller
from spe.wire.query import Query

router = APIRouter(prefix="/api/v1", tags=["federated query"])


@router.post("/query", response_model=FederatedAnswer)
async def federated_query(query: Query, caller: Caller, request: Request) -> FederatedAnswer:
    """Ask every node; each answers under its own policy and disclosure control. The
    answer lists every node with its status and time, and the combined counts."""
    return await service.federated_query(request.app.state.ctx, request.app.state.hub,
                                         query, caller)
