"""All SQL of the central job records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spe.jobs.models import CentralJob, TesTaskRecord
from spe.sandbox.environments import DEFAULT as DEFAULT_ENVIRONMENT


def add(session: Session, *, pid: str, user_id: str, code_sha256: str, entry: str,
        limits: dict[str, Any], nodes: dict[str, Any], job_id: str | None = None,
        environment: str = DEFAULT_ENVIRONMENT) -> CentralJob:
    job = CentralJob(id=job_id or uuid.uuid4().hex, pid=pid, user_id=user_id,
                     code_sha256=code_sha256, entry=entry, limits=limits, nodes=nodes,
                     environment=environment, created_at=datetime.now(UTC))
    session.add(job)
    session.flush()
    return job


def get(session: Session, job_id: str) -> CentralJob | None:
    return session.execute(select(CentralJob).where(CentralJob.id == job_id)
                           ).scalar_one_or_none()


def of_user(session: Session, user_id: str, limit: int = 100) -> list[CentralJob]:
    return list(session.execute(select(CentralJob).where(CentralJob.user_id == user_id)
                                .order_by(CentralJob.created_at.desc()).limit(limit)
                                ).scalars())


# --- GA4GH TES tasks (gateway/hub/tes.py) ---------------------------------------------------

def add_tes_task(session: Session, record: TesTaskRecord) -> TesTaskRecord:
    session.add(record)
    session.flush()
    return record


def get_tes_task(session: Session, job_id: str) -> TesTaskRecord | None:
    return session.execute(select(TesTaskRecord).where(TesTaskRecord.job_id == job_id)
                           ).scalar_one_or_none()


def tes_tasks_of_user(session: Session, user_id: str, name_prefix: str | None = None
                      ) -> list[TesTaskRecord]:
    """The user's TES tasks, newest first (then by id, so that pages are stable)."""
    query = select(TesTaskRecord).where(TesTaskRecord.user_id == user_id)
    if name_prefix:
        # A prefix match without LIKE's wildcards: `%` and `_` in the prefix are literal.
        query = query.where(TesTaskRecord.name.startswith(name_prefix, autoescape=True))
    return list(session.execute(query.order_by(TesTaskRecord.created_at.desc(),
                                               TesTaskRecord.job_id.desc())).scalars())
