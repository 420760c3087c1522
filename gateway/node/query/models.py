"""What a node remembers of the answers it gave, to catch differencing (tracker) attacks.

Each answered set of patients (a query's total, and each stratified cell) is kept as a
bitmap over the node's patient ids, for the asking user only, and never leaves the node.
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
    # Only shown sets count for differencing (a suppressed one told the user nothing);
    # every query's total row counts against the daily budget.
    shown: Mapped[bool] = mapped_column(Boolean)
    # numpy.packbits of a boolean mask indexed by patient id (bit i = patient id i).
    bitmap: Mapped[bytes] = mapped_column(LargeBinary)
