"""A job at a node: its state lives in the node database and survives a restart.

States: queued -> staging -> running -> succeeded | failed | timed_out; queued -> cancelled.
At a node whose policy vets code, a job starts awaiting_approval and goes to queued once
its code is approved (or to failed once rejected); `CodeApproval` keeps the decisions.
A job whose worker stops sending heartbeats goes back to queued (or ends failed, "worker
lost", once its attempts are used up); see `repository.requeue_stale`.

The states, and the code archive the job's code is kept as, are the hub-node contract's
(spe.wire.jobs, spe.wire.code_archive).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import NodeBase
from spe.wire.jobs import DEFAULT_ENVIRONMENT, QUEUED


class NodeJob(NodeBase):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_created_at", "state", "created_at"),
        Index("ix_jobs_pid", "pid"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    pid: Mapped[str] = mapped_column(String(32))  # the permit it runs under
    user_id: Mapped[str] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(24), default=QUEUED)  # "awaiting_approval"
    entry: Mapped[str] = mapped_column(String(255))  # e.g. "main.py", relative to the code
    code: Mapped[bytes] = mapped_column(LargeBinary)  # tar.gz of the code folder
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)  # spe.sandbox.Limits fields
    # The analysis environment it runs in (spe.sandbox.environments), as policies/jobs
    # allowed it at submission.
    environment: Mapped[str] = mapped_column(String(32), default=DEFAULT_ENVIRONMENT,
                                             server_default=DEFAULT_ENVIRONMENT)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=2)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                         nullable=True)
    # {"sandbox": SandboxResult.to_dict(), "airlock": AirlockReport} once the job ran.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # No longer written: the job's log is one of its outputs (spe.wire.jobs.LOG_NAME),
    # reviewed in the airlock; the column stays for rows of older versions.
    log_tail: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")


class CodeApproval(NodeBase):
    """An approver's decision on a job's code (by its SHA-256) for one permit at this node;
    the newest decision for (pid, code_sha256) holds, for every job of the permit with
    that code. The approved archive is kept, so a later version's diff has its base even
    once the jobs that brought it are gone."""

    __tablename__ = "code_approvals"
    __table_args__ = (Index("ix_code_approvals_pid_code_sha256", "pid", "code_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pid: Mapped[str] = mapped_column(String(32))
    code_sha256: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject
    approver: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(Text)
    code: Mapped[bytes] = mapped_column(LargeBinary)  # the archive decided on
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
