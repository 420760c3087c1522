"""One row per job the hub sent to the nodes: whose, under which permit, and what each
node answered (its own job id, or why it refused). The job's state lives at the nodes.
A job created through the GA4GH TES API (gateway/hub/tes.py) has a `TesTaskRecord` beside
it: what TES says of a task that a job does not (name, description, tags, the executor
and inputs as sent)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import CentralBase
from spe.sandbox.environments import DEFAULT as DEFAULT_ENVIRONMENT


class CentralJob(CentralBase):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    pid: Mapped[str] = mapped_column(String(32), index=True)  # the permit's public id
    user_id: Mapped[str] = mapped_column(String(320), index=True)  # Principal.id
    code_sha256: Mapped[str] = mapped_column(String(64))
    entry: Mapped[str] = mapped_column(String(255))
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The analysis environment it was sent to run in (spe.sandbox.environments).
    environment: Mapped[str] = mapped_column(String(32), default=DEFAULT_ENVIRONMENT,
                                             server_default=DEFAULT_ENVIRONMENT)
    # node id -> {"job_id": the node's job id or null, "outcome": "queued" | why not}
    nodes: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TesTaskRecord(CentralBase):
    __tablename__ = "tes_tasks"

    # The task's id is its job's.
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    user_id: Mapped[str] = mapped_column(String(320), index=True)  # the job's user
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    # The analysis environment (spe.wire.tes image names) and the executor as sent.
    environment: Mapped[str] = mapped_column(String(32))
    executor: Mapped[dict[str, Any]] = mapped_column(JSON)
    # [{"path", "name", "description", "type", "content"}]: the code as sent.
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
