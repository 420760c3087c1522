"""The one door every API route goes through: authenticate, ask Rego, write the audit log.

The decision is committed in its own transaction before the route runs, so a denial is on
record even though the request fails, and an allowed access is on record even if the
route later errors. A user suspended at the centre (`AppContext.refuse_principal`) is
refused before any policy is asked.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from spe.db import session_scope
from spe.errors import Forbidden, NotAuthenticated
from spe.identity import Principal
from spe.policy.gate import decide_or_refuse
from spe.web.context import AppContext, get_context


class Refused(Forbidden):
    """An authenticated caller the centre refuses whatever the route (a suspended user)."""

    error = "user_suspended"


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("a bearer token is required")
    return token.strip()


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", request.url.path)


def authorize(
    request: Request, ctx: Annotated[AppContext, Depends(get_context)]
) -> Principal:
    route = _route_template(request)
    target = f"{request.method} {route}"
    try:
        principal = ctx.verifier.verify(_bearer(request))
    except NotAuthenticated as exc:
        with session_scope(ctx.sessions) as session:
            ctx.audit.record(session, actor="anonymous", action="authenticate", object=target,
                             decision="deny", reason=exc.detail,
                             details={"client": request.client.host if request.client else ""})
        raise
    request.state.principal = principal  # for a refusal after the door (spe/web/refusals.py)
    refused = None
    with session_scope(ctx.sessions) as session:
        if ctx.refuse_principal is not None:
            refused = ctx.refuse_principal(session, principal)
        if refused:
            ctx.audit.record(session, actor=principal.id, action="authenticate",
                             object=target, decision="deny", reason=refused,
                             details={"client": request.client.host if request.client
                                      else ""})
        else:
            decide_or_refuse(
                ctx.policy, "authz/decision",
                {"service": ctx.service, "method": request.method, "route": route,
                 "subject": principal.policy_input()},
                audit=ctx.audit, sessions=ctx.sessions, session=session,
                actor=principal.id, action="authorize", object=target,
                details={"roles": list(principal.roles),
                         "institution": principal.institution})
            if ctx.on_principal is not None:
                ctx.on_principal(session, principal)
    if refused:
        raise Refused(refused)
    return principal


Caller = Annotated[Principal, Depends(authorize)]
