"""All SQL of the node's query history (the evaluation's SQL is in evaluate.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.node.query.models import AnsweredSet


def answered_since(session: Session, user_id: str, since: datetime) -> int:
    """How many queries the user was answered since then (one total row per query)."""
    return int(session.execute(
        select(func.count()).select_from(AnsweredSet)
        .where(AnsweredSet.user_id == user_id, AnsweredSet.at >= since,
               AnsweredSet.cell == "")).scalar_one())


def shown_sets(session: Session, user_id: str, since: datetime, limit: int) -> list[bytes]:
    """Bitmaps of the sets recently shown to the user, newest first."""
    return list(session.execute(
        select(AnsweredSet.bitmap)
        .where(AnsweredSet.user_id == user_id, AnsweredSet.at >= since, AnsweredSet.shown)
        .order_by(AnsweredSet.at.desc(), AnsweredSet.id.desc()).limit(limit)).scalars())


def record(session: Session, rows: list[AnsweredSet]) -> None:
    session.add_all(rows)
    session.flush()
