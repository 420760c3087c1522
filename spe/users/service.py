from __future__ import annotations

from sqlalchemy.orm import Session

from spe.identity import Principal
from spe.users import repository
from spe.users.models import User


def register(session: Session, principal: Principal) -> User:
    """Record a caller the first time they are seen; refresh roles and last-seen after."""
    now = repository.now()
    user = repository.get_by_identity(session, principal.issuer, principal.subject)
    if user is None:
        return repository.add(session, User(
            issuer=principal.issuer, subject=principal.subject, name=principal.name,
            email=principal.email,
            institution=principal.institution, roles=" ".join(principal.roles),
            first_seen=now, last_seen=now,
        ))
    user.last_seen = now
    user.roles = " ".join(principal.roles)
    user.institution = principal.institution
    if principal.email:
        user.email = principal.email
    return user
