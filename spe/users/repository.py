from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spe.users.models import User, UserSuspension


def get_by_identity(session: Session, issuer: str, subject: str) -> User | None:
    return session.execute(
        select(User).where(User.issuer == issuer, User.subject == subject)
    ).scalar_one_or_none()


def list_users(session: Session, *, limit: int = 100, offset: int = 0) -> list[User]:
    return list(session.execute(
        select(User).order_by(User.id).limit(limit).offset(offset)
    ).scalars())


def get(session: Session, uid: int) -> User | None:
    return session.get(User, uid)


def suspension_epoch(session: Session) -> int:
    return session.execute(select(func.max(UserSuspension.epoch))).scalar_one() or 0


def is_suspended(session: Session, user_id: str) -> bool:
    latest = session.execute(
        select(UserSuspension.suspended).where(UserSuspension.user_id == user_id)
        .order_by(UserSuspension.id.desc()).limit(1)).scalar_one_or_none()
    return latest is True


def suspension_state(session: Session, user_id: str) -> tuple[bool, int]:
    """(`is_suspended`, `suspension_epoch`) in one statement: the hub reads both for every
    query it signs contexts for."""
    latest = (select(UserSuspension.suspended).where(UserSuspension.user_id == user_id)
              .order_by(UserSuspension.id.desc()).limit(1).scalar_subquery())
    epoch = select(func.max(UserSuspension.epoch)).scalar_subquery()
    suspended, last = session.execute(select(latest, epoch)).one()
    return bool(suspended), last or 0


def suspended_users(session: Session) -> list[str]:
    latest = (select(UserSuspension.user_id, func.max(UserSuspension.id).label("last"))
              .group_by(UserSuspension.user_id).subquery())
    return list(session.execute(
        select(UserSuspension.user_id)
        .join(latest, UserSuspension.id == latest.c.last)
        .where(UserSuspension.suspended.is_(True)).order_by(UserSuspension.user_id)
    ).scalars())


def add(session: Session, user: User) -> User:
    session.add(user)
    session.flush()
    return user


def now() -> datetime:
    return datetime.now(UTC)
