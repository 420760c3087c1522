"""One row per federated run the hub drives: whose, under which permit, which app, and
its history round by round (what each node's gate answered, the metrics the aggregator
pooled, the privacy spent). The updates themselves are never stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import CentralBase


class FedRun(CentralBase):
    __tablename__ = "fed_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    pid: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(String(320), index=True)
    app: Mapped[str] = mapped_column(String(16))  # "combat" | "flower"
    # running -> succeeded | failed | cancelled
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    # What was asked: nodes, rounds, the failure rule, privacy, the app's settings.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # [{"round", "kind", "at", "nodes": {node: {"state", "reason", "seconds", ...}},
    #   "metrics": {name: pooled value}}]
    rounds: Mapped[list[Any]] = mapped_column(JSON)
    # node -> the epsilon this run spent there (at the run's delta)
    privacy: Mapped[dict[str, Any]] = mapped_column(JSON)
    airlock: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
