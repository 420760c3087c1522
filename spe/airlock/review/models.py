"""Airlock tables at the centre: one request per job, its files (each from one site) with
the automatic verdicts, and the output checkers' reviews.

Sites' outputs arrive one by one (`gateway/hub/collect.py`): each is added to the job's
request as a section (`sites`); one arriving after reviews started voids them (the
request's `review_round` goes up; a review counts in its own round only). A request none
of whose files was stored (every one blocked by the automatic checks) is `closed` once no
site is awaited."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from spe.db.base import CentralBase

STATES = ("pending", "released", "rejected", "withheld", "closed")


class AirlockRequest(CentralBase):
    __tablename__ = "airlock_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    node_id: Mapped[str] = mapped_column(String(120))  # the first site whose outputs came
    pid: Mapped[str] = mapped_column(String(32), index=True)  # the permit's public id
    requester: Mapped[str] = mapped_column(String(320), index=True)  # Principal.id
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Report-wide reasons of the automatic checks (total size, number of files).
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The sites whose outputs arrived, in order: [{"node_id", "reasons", "at"}] (`reasons`:
    # that site's report-wide ones), and the sites still awaited (their part not ended).
    sites: Mapped[list[dict]] = mapped_column(JSON, default=list)
    awaiting: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Reviews count in the current round only; a site's outputs arriving after a review
    # start a new one, and `review_note` says why the earlier reviews are void.
    review_round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    review_note: Mapped[str | None] = mapped_column(Text)

    files: Mapped[list[AirlockFile]] = relationship(
        back_populates="request", lazy="raise", cascade="all, delete-orphan",
        order_by="(AirlockFile.node_id, AirlockFile.path)")
    reviews: Mapped[list[AirlockReview]] = relationship(
        back_populates="request", lazy="raise", cascade="all, delete-orphan",
        order_by="AirlockReview.id")


class AirlockFile(CentralBase):
    """One entry of the outputs; `stored_path` is None for what was blocked (never kept)."""

    __tablename__ = "airlock_files"
    __table_args__ = (UniqueConstraint("request_id", "node_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("airlock_requests.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str] = mapped_column(String(120))  # the site that sent it
    path: Mapped[str] = mapped_column(String(1024))  # relative, POSIX
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32), default="unknown")
    verdict: Mapped[str] = mapped_column(String(16))  # pass | review | blocked
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Where the reasons point, for the checkers: [{"rule", "line", "column"}] (report.Place)
    places: Mapped[list[dict]] = mapped_column(JSON, default=list)
    stored: Mapped[bool] = mapped_column(Boolean, default=False)
    stored_path: Mapped[str | None] = mapped_column(Text)

    request: Mapped[AirlockRequest] = relationship(back_populates="files", lazy="raise")

    @property
    def name(self) -> str:
        """The file as the requester downloads it: `<site>/<path>`."""
        return f"{self.node_id}/{self.path}"


class AirlockReview(CentralBase):
    __tablename__ = "airlock_reviews"
    __table_args__ = (UniqueConstraint("request_id", "reviewer", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("airlock_requests.id", ondelete="CASCADE"), index=True)
    reviewer: Mapped[str] = mapped_column(String(320))
    round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    request: Mapped[AirlockRequest] = relationship(back_populates="reviews", lazy="raise")
