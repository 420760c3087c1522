"""Permit tables. One row per application, which becomes the permit when issued; its
members, requested datasets, reviews, history and the notifications it causes."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from spe.db.base import CentralBase


class Permit(CentralBase):
    __tablename__ = "permits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # "P-2026-0001ab"
    applicant: Mapped[str] = mapped_column(String(320), index=True)  # Principal.id
    organisation: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(40))  # EHDS Art. 53(1), see policies/permits
    declaration: Mapped[bool] = mapped_column(Boolean, default=False)  # no Art. 54 use
    legal_basis: Mapped[str] = mapped_column(String(300), default="")
    form: Mapped[str] = mapped_column(String(16), default="anonymised")
    justification: Mapped[str] = mapped_column(Text, default="")  # for pseudonymised data
    ethics_reference: Mapped[str] = mapped_column(String(200), default="")
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    # draft, submitted, changes_requested, rejected, approved, refused, issued, suspended,
    # revoked; an issued permit is active, not yet active or expired by its dates.
    status: Mapped[str] = mapped_column(String(24), default="draft", index=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)  # each submission is one
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decision_reason: Mapped[str] = mapped_column(Text, default="")
    conditions: Mapped[list[str]] = mapped_column(JSON, default=list)  # from reviews
    # A pending amendment of an issued permit: {"members": [...], "datasets": [{"dataset",
    # "node_id"}], "institutions": [...that must approve], "reason"}; None when none.
    amendment: Mapped[dict | None] = mapped_column(JSON)
    # The signed permit document the nodes enforce (a JWS), once issued.
    document: Mapped[str | None] = mapped_column(Text)

    members: Mapped[list[PermitMember]] = relationship(
        back_populates="permit", lazy="raise", cascade="all, delete-orphan",
        order_by="PermitMember.id")
    datasets: Mapped[list[PermitDataset]] = relationship(
        back_populates="permit", lazy="raise", cascade="all, delete-orphan",
        order_by="PermitDataset.id")
    reviews: Mapped[list[PermitReview]] = relationship(
        back_populates="permit", lazy="raise", cascade="all, delete-orphan",
        order_by="PermitReview.id")
    events: Mapped[list[PermitEvent]] = relationship(
        back_populates="permit", lazy="raise", cascade="all, delete-orphan",
        order_by="PermitEvent.id")


class PermitMember(CentralBase):
    """A named person on the permit (the applicant is one too)."""

    __tablename__ = "permit_members"
    __table_args__ = (UniqueConstraint("permit_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    permit_id: Mapped[int] = mapped_column(ForeignKey("permits.id", ondelete="CASCADE"),
                                           index=True)
    user_id: Mapped[str] = mapped_column(String(320), index=True)
    role: Mapped[str] = mapped_column(String(16), default="member")  # applicant | member

    permit: Mapped[Permit] = relationship(back_populates="members", lazy="raise")


class PermitDataset(CentralBase):
    __tablename__ = "permit_datasets"
    __table_args__ = (UniqueConstraint("permit_id", "dataset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    permit_id: Mapped[int] = mapped_column(ForeignKey("permits.id", ondelete="CASCADE"),
                                           index=True)
    dataset: Mapped[str] = mapped_column(String(300))  # catalogue identifier
    node_id: Mapped[str] = mapped_column(String(120), index=True)  # the holder

    permit: Mapped[Permit] = relationship(back_populates="datasets", lazy="raise")


class PermitReview(CentralBase):
    """One institution's review of one revision of the application."""

    __tablename__ = "permit_reviews"
    __table_args__ = (UniqueConstraint("permit_id", "revision", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    permit_id: Mapped[int] = mapped_column(ForeignKey("permits.id", ondelete="CASCADE"),
                                           index=True)
    revision: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[str] = mapped_column(String(120))
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject | changes
    reason: Mapped[str] = mapped_column(Text, default="")
    conditions: Mapped[list[str]] = mapped_column(JSON, default=list)
    reviewer: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    permit: Mapped[Permit] = relationship(back_populates="reviews", lazy="raise")


class PermitEvent(CentralBase):
    """The permit's history as people read it (the audit log holds the same, chained)."""

    __tablename__ = "permit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    permit_id: Mapped[int] = mapped_column(ForeignKey("permits.id", ondelete="CASCADE"),
                                           index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[str] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(Text, default="")

    permit: Mapped[Permit] = relationship(back_populates="events", lazy="raise")


class Notification(CentralBase):
    """Someone who must act next: a user, or everyone with a role (at an institution)."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(320), index=True)
    role: Mapped[str | None] = mapped_column(String(32), index=True)
    institution: Mapped[str | None] = mapped_column(String(120))
    permit_id: Mapped[int | None] = mapped_column(ForeignKey("permits.id",
                                                             ondelete="CASCADE"))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
