"""What the node gate let leave under a privacy setting: one row per round, so a permit's
spend at this node is known across runs and restarts (policies/federated `gate`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import NodeBase


class FedSpend(NodeBase):
    __tablename__ = "fed_spend"
    __table_args__ = (Index("ix_fed_spend_pid_run", "pid", "run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pid: Mapped[str] = mapped_column(String(32))
    run: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer)
    noise_multiplier: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    # The run's epsilon at `delta` after this round (its rounds composed): a permit's
    # spend is the sum over its runs of each run's last figure.
    epsilon_run: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
