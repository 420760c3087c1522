"""Central suspension of users: an admin suspends or reinstates a user; from then on their
tokens are refused at the centre's door (spe.web.access), the hub signs no context for
them (`EpochOf`, given to the hub's ContextSigner), and the hub pushes the list to every
node (`PUT /api/v1/suspensions`), which refuses their contexts too.

Why the nodes' own check holds when the hub lags: each context carries the epoch of the
list it was signed under, and a node whose list is older refuses the context instead of
trusting its stale list (gateway/node/trust/door.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from spe.audit import AuditLog
from spe.db import session_scope
from spe.errors import Forbidden, NotFound
from spe.identity import Principal
from spe.users import repository
from spe.users.models import UserSuspension
from spe.wire.suspensions import SuspensionList


class UserSuspended(Forbidden):
    error = "user_suspended"


def principal_id(subject: str, issuer: str) -> str:
    """As spe.identity.Principal.id names a user (and the hub's contexts carry it)."""
    return Principal(subject=subject, issuer=issuer, roles=()).id


def set_suspended(session: Session, uid: int, *, suspended: bool, reason: str, actor: str,
                  audit: AuditLog) -> str:
    """Suspend or reinstate the user `uid` (users.id), audited; their Principal id."""
    user = repository.get(session, uid)
    if user is None:
        raise NotFound(f"no user {uid}")
    user_id = principal_id(user.subject, user.issuer)
    now = datetime.now(UTC)
    epoch = max(int(now.timestamp() * 1_000_000), repository.suspension_epoch(session) + 1)
    session.add(UserSuspension(epoch=epoch, user_id=user_id, suspended=suspended,
                               reason=reason, actor=actor, at=now))
    session.flush()
    audit.record(session, actor=actor, action="user.suspend" if suspended else
                 "user.reinstate", object=user_id, decision="allow", reason=reason or "-",
                 details={"epoch": repository.suspension_epoch(session)})
    return user_id


def suspension_list(session: Session) -> SuspensionList:
    return SuspensionList(epoch=repository.suspension_epoch(session),
                          users=repository.suspended_users(session))


def refused(session: Session, principal: Principal) -> str | None:
    """The central door's check: a reason to refuse `principal`, or None."""
    if repository.is_suspended(session, principal.id):
        return f"{principal.id} is suspended"
    return None


class EpochOf:
    """For the hub's ContextSigner: the list's epoch, or UserSuspended for a suspended
    user (the hub signs nothing for them)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def __call__(self, user: str) -> int:
        with session_scope(self.sessions) as session:
            suspended, epoch = repository.suspension_state(session, user)
        if suspended:
            raise UserSuspended(f"{user} is suspended: the hub signs nothing for them")
        return epoch


__all__ = ["EpochOf", "UserSuspended", "refused", "set_suspended", "suspension_list"]
