"""Liveness: the process answers. Public, carries no data, so it sits outside the policy
door. Whether the service can do its work (database, identity provider, policy, audit
chain, certificates) is /ready's question (spe/observability): a liveness probe that
failed on a database outage would have the service restarted for nothing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from spe.web.context import AppContext, get_context

router = APIRouter(tags=["health"])


@router.get("/health")
def health(ctx: Annotated[AppContext, Depends(get_context)]) -> dict:
    return {"status": "ok", "service": ctx.service, "name": ctx.name}
