from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import CentralBase


class User(CentralBase):
    """A unique identity: the same subject at two identity providers is two users."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    institution: Mapped[str | None] = mapped_column(String(120))
    roles: Mapped[str] = mapped_column(String(255), default="")
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserSuspension(CentralBase):
    """Each suspension or reinstatement of a user, in order: the latest row per user says
    whether they are suspended; the highest id is the list's epoch (what the hub's
    contexts carry and the nodes compare with)."""

    __tablename__ = "user_suspensions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(520), index=True)  # Principal.id
    suspended: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(500), default="")
    actor: Mapped[str] = mapped_column(String(520))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
