"""Job state transitions, each one conditional so that workers on many machines (and
processes) never take the same job, and a worker that lost its job cannot overwrite it.

The caller owns the transaction (`spe.db.session_scope`). Every transition is a single
conditional `UPDATE ... RETURNING`: on PostgreSQL the claim picks its row with
`FOR UPDATE SKIP LOCKED`; on SQLite the UPDATE takes the database's write lock first, so
the row it picks is still queued when it is taken (checked again in its WHERE).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.node.jobs.models import NodeJob
from spe.sandbox import Limits
from spe.wire.jobs import (
    ACTIVE,
    AWAITING_APPROVAL,
    CANCELLED,
    DEFAULT_ENVIRONMENT,
    FAILED,
    FINAL,
    QUEUED,
    RUNNING,
    STAGING,
    WORKER_LOST,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def enqueue(
    session: Session,
    *,
    pid: str,
    user_id: str,
    code: bytes,
    entry: str = "main.py",
    limits: Limits | dict[str, Any] | None = None,
    environment: str = DEFAULT_ENVIRONMENT,
    max_attempts: int = 2,
    now: datetime | None = None,
    job_id: str | None = None,
    state: str = QUEUED,
    reason: str = "",
) -> NodeJob:
    """Add a queued job (limits are validated against `spe.sandbox.Limits` and its caps), or
    one held until its code is approved (`state` AWAITING_APPROVAL, with the reason)."""
    if state not in (QUEUED, AWAITING_APPROVAL):
        raise ValueError(f"a job starts queued or awaiting approval, not {state!r}")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    checked = limits if isinstance(limits, Limits) else Limits(**(limits or {}))
    job = NodeJob(
        id=job_id or uuid.uuid4().hex,
        pid=pid,
        user_id=user_id,
        state=state,
        entry=entry,
        code=code,
        limits=checked.model_dump(),
        environment=environment,
        attempts=0,
        max_attempts=max_attempts,
        created_at=now or utcnow(),
        log_tail="",
        reason=reason,
    )
    session.add(job)
    session.flush()
    return job


def get(session: Session, job_id: str) -> NodeJob | None:
    return session.execute(select(NodeJob).where(NodeJob.id == job_id)
                           .execution_options(populate_existing=True)).scalar_one_or_none()


def claim(session: Session, worker_id: str, now: datetime | None = None, *,
          job_id: str | None = None) -> NodeJob | None:
    """Take the oldest queued job (or the job `job_id`, if still queued) for `worker_id`
    (state staging, one more attempt).

    Atomic across threads, processes and machines: the job is `None` when there was
    nothing queued (or every queued job was just taken by another worker).
    """
    now = now or utcnow()
    oldest = (select(NodeJob.id).where(NodeJob.state == QUEUED)
              .order_by(NodeJob.created_at, NodeJob.id).limit(1))
    if job_id is not None:
        oldest = oldest.where(NodeJob.id == job_id)
    if session.get_bind().dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    taken = session.execute(
        update(NodeJob)
        .where(NodeJob.id == oldest.scalar_subquery(), NodeJob.state == QUEUED)
        .values(state=STAGING, worker=worker_id, attempts=NodeJob.attempts + 1,
                heartbeat_at=now, started_at=now, finished_at=None, reason="")
        .returning(NodeJob.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    return None if taken is None else get(session, taken)


def _move(session: Session, job_id: str, worker_id: str, states: Iterable[str],
          **values: Any) -> bool:
    changed = session.execute(
        update(NodeJob)
        .where(NodeJob.id == job_id, NodeJob.worker == worker_id,
               NodeJob.state.in_(list(states)))
        .values(**values)
        .returning(NodeJob.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    return changed is not None


def mark_running(session: Session, job_id: str, worker_id: str,
                 now: datetime | None = None) -> bool:
    """staging -> running, only while `worker_id` still holds the job."""
    return _move(session, job_id, worker_id, [STAGING], state=RUNNING,
                 heartbeat_at=now or utcnow())


def heartbeat(session: Session, job_id: str, worker_id: str,
              now: datetime | None = None) -> bool:
    """Say the worker still runs the job; False when the job is no longer its own."""
    return _move(session, job_id, worker_id, ACTIVE, heartbeat_at=now or utcnow())


def finish(
    session: Session,
    job_id: str,
    worker_id: str,
    state: str,
    *,
    result: dict[str, Any] | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> bool:
    """Record a final state; False (nothing written) when the worker no longer holds the job
    (it was found stale and requeued, or cancelled)."""
    if state not in FINAL or state == CANCELLED:
        raise ValueError(f"a worker cannot finish a job as {state!r}")
    now = now or utcnow()
    return _move(session, job_id, worker_id, ACTIVE, state=state, result=result,
                 reason=reason, finished_at=now, heartbeat_at=now)


@dataclass(frozen=True)
class StaleJob:
    id: str
    worker: str | None
    attempts: int
    state: str  # what the job became: queued (retried) or failed (worker lost)


def requeue_stale(session: Session, now: datetime | None = None,
                  stale_after: timedelta | float = 10.0) -> list[StaleJob]:
    """Jobs staging or running whose heartbeat is older than `stale_after`: back to queued
    while attempts remain, else failed with reason "worker lost". Never leaves one stuck."""
    now = now or utcnow()
    if not isinstance(stale_after, timedelta):
        stale_after = timedelta(seconds=stale_after)
    cutoff = now - stale_after
    stale = (NodeJob.state.in_(list(ACTIVE)),
             (NodeJob.heartbeat_at < cutoff) | NodeJob.heartbeat_at.is_(None))
    out: list[StaleJob] = []
    retried = session.execute(
        update(NodeJob)
        .where(*stale, NodeJob.attempts < NodeJob.max_attempts)
        .values(state=QUEUED, heartbeat_at=None,
                reason=WORKER_LOST + "; queued again")
        .returning(NodeJob.id, NodeJob.worker, NodeJob.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    out += [StaleJob(row.id, row.worker, row.attempts, QUEUED) for row in retried]
    lost = session.execute(
        update(NodeJob)
        .where(*stale, NodeJob.attempts >= NodeJob.max_attempts)
        .values(state=FAILED, reason=WORKER_LOST, finished_at=now)
        .returning(NodeJob.id, NodeJob.worker, NodeJob.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    out += [StaleJob(row.id, row.worker, row.attempts, FAILED) for row in lost]
    return sorted(out, key=lambda j: j.id)


def cancel(session: Session, job_id: str, *, reason: str = "cancelled",
           now: datetime | None = None) -> bool:
    """Cancel a queued job; False when it is not queued (already taken or final)."""
    changed = session.execute(
        update(NodeJob)
        .where(NodeJob.id == job_id, NodeJob.state == QUEUED)
        .values(state=CANCELLED, reason=reason, finished_at=now or utcnow())
        .returning(NodeJob.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    return changed is not None


def by_state(session: Session, state: str) -> list[NodeJob]:
    return list(session.execute(select(NodeJob).where(NodeJob.state == state)
                                .order_by(NodeJob.created_at)).scalars())


def cancel_for_permit(session: Session, pid: str, *, reason: str,
                      now: datetime | None = None) -> list[str]:
    """Cancel every job of a permit that is not final (a revocation or suspension): queued
    and held ones never start, and a running one's worker finds it gone at its next
    heartbeat and kills the sandbox."""
    ids = session.execute(
        update(NodeJob)
        .where(NodeJob.pid == pid, NodeJob.state.in_([QUEUED, AWAITING_APPROVAL, *ACTIVE]))
        .values(state=CANCELLED, reason=reason, finished_at=now or utcnow())
        .returning(NodeJob.id)
        .execution_options(synchronize_session=False)
    ).scalars().all()
    return list(ids)


def cancel_job(session: Session, job_id: str, *, reason: str = "cancelled",
               now: datetime | None = None) -> bool:
    """Cancel one job that is not final: a queued or held one never starts, and a staging
    or running one's worker finds it gone at its next heartbeat and kills the sandbox
    (like `cancel_for_permit`). False when the job is unknown or already final."""
    changed = session.execute(
        update(NodeJob)
        .where(NodeJob.id == job_id, NodeJob.state.in_([QUEUED, AWAITING_APPROVAL, *ACTIVE]))
        .values(state=CANCELLED, reason=reason, finished_at=now or utcnow())
        .returning(NodeJob.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    return changed is not None


def queued_ids(session: Session, limit: int = 1000) -> list[str]:
    return list(session.execute(select(NodeJob.id).where(NodeJob.state == QUEUED)
                                .order_by(NodeJob.created_at).limit(limit)).scalars())
