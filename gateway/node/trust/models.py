"""What a node remembers about its hub's contexts and its users' suspensions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import NodeBase


class UsedContext(NodeBase):
    """A hub context already answered: its `jti`, kept until the context expires (a replay
    inside that time finds it; after, the context is refused as expired anyway). In the
    database, so every worker process of the node sees it."""

    __tablename__ = "hub_contexts_used"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class SuspensionList(NodeBase):
    """The hub's latest suspension list (one row): whose contexts this node refuses."""

    __tablename__ = "suspension_list"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    epoch: Mapped[int] = mapped_column(BigInteger)
    users: Mapped[list[str]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
