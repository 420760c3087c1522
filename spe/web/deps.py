"""The request owns the transaction: commit at the end, roll back on any error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from spe.web.context import AppContext, get_context


def db_session(ctx: Annotated[AppContext, Depends(get_context)]) -> Iterator[Session]:
    session = ctx.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function": commit before the response is sent. FastAPI's default ("request") runs
# this after the response, so a client could be told 200 for a write whose commit then
# fails, and its next read could race the commit (tests/spe/test_web_deps.py).
DbSession = Annotated[Session, Depends(db_session, scope="function")]
