from __future__ import annotations

import threading
import time

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


class Registrar:
    """`register` for every authorised request, written only when something about the
    user changed or `refresh_seconds` passed (`last_seen` is that precise): most requests
    then cost no users write. One per app (its own database)."""

    def __init__(self, refresh_seconds: float = 60.0, max_users: int = 10_000) -> None:
        self.refresh_seconds = refresh_seconds
        self.max_users = max_users
        self._seen: dict[tuple[str, str], tuple[tuple, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, session: Session, principal: Principal) -> None:
        key = (principal.issuer, principal.subject)
        facts = (principal.name, principal.email, principal.institution,
                 tuple(principal.roles))
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
        if seen is not None and seen[0] == facts and now - seen[1] < self.refresh_seconds:
            return
        register(session, principal)
        with self._lock:
            if len(self._seen) >= self.max_users:
                self._seen.clear()
            self._seen[key] = (facts, now)
