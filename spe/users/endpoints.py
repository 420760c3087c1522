from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from spe.db import session_scope
from spe.users import repository, suspensions
from spe.users.schemas import MeOut, SuspensionIn, SuspensionOut, UserOut
from spe.web import Caller, DbSession
from spe.web.paging import Offset
from spe.wire.suspensions import SuspensionList

router = APIRouter(prefix="/api/v1", tags=["users"])


@router.get("/me", response_model=MeOut)
def me(caller: Caller) -> MeOut:
    return MeOut(id=caller.id, subject=caller.subject, issuer=caller.issuer,
                 roles=list(caller.roles), institution=caller.institution, name=caller.name)


@router.get("/users", response_model=list[UserOut])
def list_users(
    _: Caller,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list:
    return repository.list_users(session, limit=limit, offset=offset)


@router.put("/users/{uid}/suspension", response_model=SuspensionOut)
async def suspend(uid: Annotated[int, Path(ge=1, le=2**31 - 1)], body: SuspensionIn,
                  caller: Caller, request: Request) -> SuspensionOut:
    """Suspend (or reinstate) a user: their tokens are refused here from now on, the hub
    signs no context for them, and the list goes to every node, which refuses theirs."""
    ctx = request.app.state.ctx

    def record() -> tuple[str, SuspensionList]:
        with session_scope(ctx.sessions) as session:  # committed before the nodes are told
            user_id = suspensions.set_suspended(session, uid, suspended=body.suspended,
                                                reason=body.reason, actor=caller.id,
                                                audit=ctx.audit)
            return user_id, suspensions.suspension_list(session)

    user_id, listed = await run_in_threadpool(record)
    push = request.app.state.suspension_push
    nodes = {} if push is None else await push.push(listed)
    return SuspensionOut(user=user_id, suspended=body.suspended, epoch=listed.epoch,
                         nodes=nodes)
