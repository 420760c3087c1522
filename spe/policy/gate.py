"""Decide, audit, refuse: the one step every guarded action takes.

A denial is recorded in a transaction of its own and committed before the refusal is
raised, since the refused request's own transaction is rolled back with it; an allow is
recorded in the caller's transaction (`session`), so the change and its audit entry exist
together or not at all. The decision fails closed (spe.policy.service).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from spe.db import session_scope
from spe.errors import Forbidden, SPEError
from spe.policy.service import Decision, PolicyService

if TYPE_CHECKING:  # spe.audit is duck-typed here: it serves routes through spe.web
    from spe.audit import AuditLog

__all__ = ["audit_refusal", "decide_or_refuse"]


def audit_refusal(audit: AuditLog, sessions: sessionmaker[Session], error: SPEError, *,
                  actor: str, action: str, object: str,
                  details: dict[str, Any] | None = None) -> SPEError:
    """`error`, its reason recorded as a denial in its own committed transaction."""
    with session_scope(sessions) as own:
        audit.record(own, actor=actor, action=action, object=object, decision="deny",
                     reason=error.detail, details=details)
    return error


def decide_or_refuse(
    policy: PolicyService, name: str, input: dict[str, Any], *,
    audit: AuditLog, sessions: sessionmaker[Session], session: Session | None,
    actor: str, action: str, object: str, details: dict[str, Any] | None = None,
    refuse: Callable[[Decision], SPEError] = lambda d: Forbidden(d.reason),
) -> Decision:
    """`policy`'s decision `name` on `input`; a denial is audited and raised as
    `refuse(decision)`. `session` None: the allow is not audited here (the caller's step
    records what it did, or nothing changes)."""
    decision = policy.decide(name, input)
    if not decision.allow:
        raise audit_refusal(audit, sessions, refuse(decision), actor=actor, action=action,
                            object=object, details=details)
    if session is not None:
        audit.record(session, actor=actor, action=action, object=object, decision="allow",
                     reason=decision.reason, details=details)
    return decision
