"""All SQL of the airlock's review."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from spe.airlock.review.models import AirlockRequest

_FULL = (selectinload(AirlockRequest.files), selectinload(AirlockRequest.reviews))


def get(session: Session, request_id: str, *, for_update: bool = False
        ) -> AirlockRequest | None:
    stmt = select(AirlockRequest).where(AirlockRequest.id == request_id).options(*_FULL)
    if for_update:  # reviews of one request are serialised (PostgreSQL; SQLite locks all)
        stmt = stmt.with_for_update(of=AirlockRequest)
    return session.execute(stmt).scalar_one_or_none()


def add(session: Session, request: AirlockRequest) -> AirlockRequest:
    session.add(request)
    session.flush()
    return request


def list_for(session: Session, *, requester: str | None = None,
             states: list[str] | None = None, pid: str | None = None,
             job_id: str | None = None, for_update: bool = False, limit: int = 200
             ) -> list[AirlockRequest]:
    """Requests, newest first: a requester's own, a permit's, a job's, or by state."""
    stmt = select(AirlockRequest).options(*_FULL).order_by(
        AirlockRequest.created_at.desc()).limit(limit)
    if requester is not None:
        stmt = stmt.where(AirlockRequest.requester == requester)
    if states:
        stmt = stmt.where(AirlockRequest.state.in_(states))
    if pid is not None:
        stmt = stmt.where(AirlockRequest.pid == pid)
    if job_id is not None:
        stmt = stmt.where(AirlockRequest.job_id == job_id)
    if for_update:
        stmt = stmt.with_for_update(of=AirlockRequest)
    return list(session.execute(stmt).scalars())


def of_job(session: Session, job_id: str, *, for_update: bool = False
           ) -> AirlockRequest | None:
    """The job's request (the newest, where requests kept from before one-per-job are
    several, one per site)."""
    found = list_for(session, job_id=job_id, for_update=for_update, limit=1)
    return found[0] if found else None
