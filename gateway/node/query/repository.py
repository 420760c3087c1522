"""All SQL of the node's query history (the evaluation's SQL is in evaluate.py).

Core statements on the table, built once with bound parameters, not the ORM: every query
reads the asker's history and appends to it, and building statements and the ORM's unit
of work cost more than running them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import Session

from gateway.node.query.models import AnsweredSet

_SETS = AnsweredSet.__table__
_ANSWERED_SINCE = (
    select(func.count()).select_from(_SETS)
    .where(_SETS.c.user_id == bindparam("user_id"), _SETS.c.at >= bindparam("since"),
           _SETS.c.cell == ""))
_RECORD = insert(_SETS)


def answered_since(session: Session, user_id: str, since: datetime) -> int:
    """How many queries the user was answered since then (one total row per query)."""
    return int(session.execute(_ANSWERED_SINCE, {"user_id": user_id, "since": since})
               .scalar_one())


def record(session: Session, rows: list[dict]) -> None:
    """Append answered sets: dicts of the AnsweredSet columns but `id`."""
    if rows:
        session.execute(_RECORD, rows)


__all__ = ["answered_since", "record"]
