"""Liveness and readiness: public, carries no data, so it sits outside the policy door."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from spe.web.context import AppContext, get_context

router = APIRouter(tags=["health"])


@router.get("/health")
def health(ctx: Annotated[AppContext, Depends(get_context)]) -> JSONResponse:
    try:
        with ctx.sessions() as session:
            session.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError:
        database = "unavailable"
    status = 200 if database == "ok" else 503
    return JSONResponse(
        {"status": "ok" if status == 200 else "degraded", "service": ctx.service,
         "name": ctx.name, "database": database},
        status_code=status,
    )
