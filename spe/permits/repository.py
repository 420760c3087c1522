"""All SQL of the permits."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from spe.permits.models import Notification, Permit, PermitMember, PermitReview

_FULL = (selectinload(Permit.members), selectinload(Permit.datasets),
         selectinload(Permit.reviews), selectinload(Permit.events))


def get(session: Session, public_id: str, *, for_update: bool = False) -> Permit | None:
    stmt = select(Permit).where(Permit.public_id == public_id).options(*_FULL)
    if for_update:  # transitions of one permit are serialised (PostgreSQL; SQLite locks all)
        stmt = stmt.with_for_update(of=Permit)
    return session.execute(stmt).scalar_one_or_none()


def add(session: Session, permit: Permit) -> Permit:
    session.add(permit)
    session.flush()
    return permit


def list_for(session: Session, *, user_id: str | None = None,
             institution: str | None = None, statuses: list[str] | None = None,
             limit: int = 200) -> list[Permit]:
    """Permits a user is named on, or that ask for an institution's data, newest first."""
    from spe.permits.models import PermitDataset

    stmt = select(Permit).options(*_FULL).order_by(Permit.id.desc()).limit(limit)
    if user_id is not None:
        stmt = stmt.where(or_(Permit.applicant == user_id, Permit.id.in_(
            select(PermitMember.permit_id).where(PermitMember.user_id == user_id))))
    if institution is not None:
        stmt = stmt.where(Permit.id.in_(
            select(PermitDataset.permit_id).where(PermitDataset.node_id == institution)))
    if statuses:
        stmt = stmt.where(Permit.status.in_(statuses))
    if user_id is None:
        stmt = stmt.where(Permit.status != "draft")  # drafts are their applicant's alone
    return list(session.execute(stmt).scalars())


def reviews_of(session: Session, permit: Permit) -> list[PermitReview]:
    return [r for r in permit.reviews if r.revision == permit.revision]


def notifications_for(session: Session, user_id: str, roles: list[str],
                      institution: str | None,
                      limit: int = 50) -> list[tuple[Notification, str | None]]:
    """(notification, the permit's public id) for a user, newest first."""
    by_role = Notification.role.in_(roles) & (
        Notification.institution.is_(None) | (Notification.institution == institution))
    stmt = (select(Notification, Permit.public_id)
            .outerjoin(Permit, Permit.id == Notification.permit_id)
            .where(or_(Notification.user_id == user_id, by_role))
            .order_by(Notification.id.desc()).limit(limit))
    return [(n, pid) for n, pid in session.execute(stmt).all()]


def notify(session: Session, notification: Notification) -> None:
    session.add(notification)
