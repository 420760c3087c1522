"""Reading and verifying the audit log; the same routes serve the centre and every node."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from spe.audit import repository
from spe.audit.checkpoints import signer_name
from spe.audit.schemas import AuditEntryOut, VerifyOut
from spe.audit.verify import running_service
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
    """The chain, and the signed checkpoints (spe.audit.verify)."""
    outcome = running_service(session, ctx.audit, ctx.settings,
                              signer_name(ctx.service, ctx.name))
    return VerifyOut(
        ok=outcome.ok,
        checked=outcome.checked,
        first_bad=str(outcome.breaks[0]) if outcome.breaks else None,
        breaks=[str(b) for b in outcome.breaks[:100]],
    )
