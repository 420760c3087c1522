"""Liveness and readiness: public, carries no data, so it sits outside the policy door."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from spe.web.context import AppContext, get_context

router = APIRouter(tags=["health"])


@router.get("/health")
def health(ctx: Annotated[AppContext, Depends(get_context)], request: Request) -> JSONResponse:
    try:
        with ctx.sessions() as session:
            session.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError:
        database = "unavailable"
    # A chain that broke while running (spe.audit.schedule): the details are in the log,
    # not here, for anyone to read.
    checkpointer = getattr(request.app.state, "audit_checkpointer", None)
    audit = "broken" if checkpointer is not None and checkpointer.alarm else "ok"
    status = 200 if database == "ok" and audit == "ok" else 503
    return JSONResponse(
        {"status": "ok" if status == 200 else "degraded", "service": ctx.service,
         "name": ctx.name, "database": database, "audit": audit},
        status_code=status,
    )
