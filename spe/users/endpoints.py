from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from spe.users import repository
from spe.users.schemas import MeOut, UserOut
from spe.web import Caller, DbSession
from spe.web.paging import Offset

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
