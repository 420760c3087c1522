from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from spe.users.models import User


def get_by_identity(session: Session, issuer: str, subject: str) -> User | None:
    return session.execute(
        select(User).where(User.issuer == issuer, User.subject == subject)
    ).scalar_one_or_none()


def list_users(session: Session, *, limit: int = 100, offset: int = 0) -> list[User]:
    return list(session.execute(
        select(User).order_by(User.id).limit(limit).offset(offset)
    ).scalars())


def add(session: Session, user: User) -> User:
    session.add(user)
    session.flush()
    return user


def now() -> datetime:
    return datetime.now(UTC)
