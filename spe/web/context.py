"""Everything a running app needs, built once at start-up and kept on `app.state`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from spe.identity import Principal, TokenVerifier
from spe.policy import PolicyService
from spe.settings import Settings

if TYPE_CHECKING:  # spe.audit serves its routes through this package's door
    from spe.audit import AuditLog


@dataclass
class AppContext:
    service: str  # "central" or "node": the policy input says which door is asked
    settings: Settings
    sessions: sessionmaker[Session]
    verifier: TokenVerifier
    policy: PolicyService
    audit: AuditLog
    name: str = ""
    # Called in the authorisation transaction, e.g. to register the user at the centre.
    on_principal: Callable[[Session, Principal], None] | None = None
    # A reason to refuse an authenticated caller (a user suspended at the centre), or None.
    refuse_principal: Callable[[Session, Principal], str | None] | None = None


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx
