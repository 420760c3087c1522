"""The latest signed permit document the node has received for each permit."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Date, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import NodeBase


class NodePermit(NodeBase):
    __tablename__ = "permits"

    pid: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24))  # issued | suspended | revoked
    members: Mapped[list[str]] = mapped_column(JSON)
    datasets: Mapped[list[str]] = mapped_column(JSON)  # this node's datasets it covers
    form: Mapped[str] = mapped_column(String(16))
    start: Mapped[date] = mapped_column(Date)
    end: Mapped[date] = mapped_column(Date)
    document: Mapped[str] = mapped_column(Text)  # the JWS as received, for the record
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
