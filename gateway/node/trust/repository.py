"""All SQL of the node's trust tables."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.node.trust.models import SuspensionList, UsedContext


def use_context(session: Session, jti: str, expires_at: datetime) -> bool:
    """Record `jti` as used; False if it was already (a replay). Expired entries go first:
    a context past its `exp` is refused as expired, so its jti need not be kept."""
    session.execute(delete(UsedContext).where(UsedContext.expires_at < datetime.now(UTC)))
    try:
        with session.begin_nested():
            session.add(UsedContext(jti=jti, expires_at=expires_at))
    except IntegrityError:
        return False
    return True


def suspensions(session: Session) -> SuspensionList | None:
    return session.get(SuspensionList, 1)


def store_suspensions(session: Session, epoch: int, users: list[str]) -> str:
    """Keep the list if it is newer than the one held: "stored"; "held" if it is the one
    held (a repeated push); "older" if an older one came late (kept out)."""
    current = session.get(SuspensionList, 1, with_for_update=True)
    if current is not None and current.epoch > epoch:
        return "older"
    if current is not None and current.epoch == epoch:
        return "held"
    if current is None:
        session.add(SuspensionList(id=1, epoch=epoch, users=sorted(set(users)),
                                   received_at=datetime.now(UTC)))
    else:
        current.epoch, current.users = epoch, sorted(set(users))
        current.received_at = datetime.now(UTC)
    session.flush()
    return "stored"


__all__ = ["store_suspensions", "suspensions", "use_context"]
