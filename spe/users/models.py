from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, UniqueConstraint
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
    whether they are suspended; the highest `epoch` is the list's (what the hub's contexts
    carry and the nodes compare with). Epochs are microseconds of the change's time, kept
    increasing: a central database restored from an older backup still counts upwards from
    what the nodes already hold."""

    __tablename__ = "user_suspensions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, index=True)
    user_id: Mapped[str] = mapped_column(String(520), index=True)  # Principal.id
    suspended: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(500), default="")
    actor: Mapped[str] = mapped_column(String(520))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
