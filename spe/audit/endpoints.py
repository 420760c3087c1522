"""Reading and verifying the audit log; the same routes serve the centre and every node."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from spe.audit import repository
from spe.audit.schemas import AuditEntryOut, VerifyOut
from spe.web import AppContext, Caller, DbSession, get_context
from spe.web.paging import After

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
Ctx = Annotated[AppContext, Depends(get_context)]


@router.get("", response_model=list[AuditEntryOut])
def list_entries(
    _: Caller,
    ctx: Ctx,
    session: DbSession,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list:
    return repository.page(session, ctx.audit.entry_model, after=after, limit=limit)


@router.get("/verify", response_model=VerifyOut)
def verify(_: Caller, ctx: Ctx, session: DbSession) -> VerifyOut:
    report = ctx.audit.verify(session)
    return VerifyOut(
        ok=report.ok,
        checked=report.checked,
        first_bad=str(report.first_bad) if report.first_bad else None,
        breaks=[str(b) for b in report.breaks[:100]],
    )
