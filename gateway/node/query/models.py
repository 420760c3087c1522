"""What a node remembers of the answers it gave: one row per answered query and user, for
the daily budget (policies/query). No set of patients is kept: the statistics tier's
perturbation needs no history (`bitmap` stays empty; it held the sets of the differencing
defence the cell-key method replaced).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import NodeBase


class AnsweredSet(NodeBase):
    __tablename__ = "query_answered_sets"
    __table_args__ = (Index("ix_query_answered_sets_user_at", "user_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    query_hash: Mapped[str] = mapped_column(String(64))
    # "" for a query's total, else the cell's key ("sex=female|age_band=40-64").
    cell: Mapped[str] = mapped_column(String(200), default="")
    size: Mapped[int] = mapped_column(Integer)
    # Whether the total was shown; every query's total row counts against the budget.
    shown: Mapped[bool] = mapped_column(Boolean)
    # Empty: no set of patients is kept (see the module's docstring).
    bitmap: Mapped[bytes] = mapped_column(LargeBinary)
