"""The admins' changes to the federation's membership, over SPE_FEDERATION_NODES."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import CentralBase


class FederationNode(CentralBase):
    """One institution node an admin added ("member", with its URL) or removed
    ("removed"): the latest change per node, its history in the audit log."""

    __tablename__ = "federation_nodes"

    node_id: Mapped[str] = mapped_column(String(253), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # "member" | "removed"
    url: Mapped[str | None] = mapped_column(String(2000))
    changed_by: Mapped[str] = mapped_column(String(520))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
