"""The hub's federated query API (statistics tier for registered researchers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Query as QueryParam

from gateway.hub import service
from gateway.hub.schemas import FederatedAnswer
from spe.db import session_scope
from spe.permits.service import Permits
from spe.web import Caller
from spe.wire.query import Query

router = APIRouter(prefix="/api/v1", tags=["federated query"])


@router.post("/query", response_model=FederatedAnswer)
async def federated_query(
    query: Query, caller: Caller, request: Request,
    permit: Annotated[str | None, QueryParam(
        max_length=32, description="ask in the permit tier, under this permit")] = None,
) -> FederatedAnswer:
    """Ask every node; each answers under its own policy and disclosure control. The
    answer lists every node with its status and time, and the combined counts."""
    ctx = request.app.state.ctx

    def use_permit(pid: str) -> None:
        permits = Permits(policy=ctx.policy, sessions=ctx.sessions, audit=ctx.audit,
                          holder=request.app.state.dataset_holder)
        with session_scope(ctx.sessions) as session:
            permits.authorize_use(session, caller, pid)

    return await service.federated_query(ctx, request.app.state.hub, query, caller,
                                         permit=permit, use_permit=use_permit)
