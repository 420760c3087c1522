"""The node's signed audit checkpoints, for its hub to keep as their witness (spe.wire.audit).

Only from the hub, like queries and jobs: mutual TLS and a context the hub signed for its
witness (`hub:audit-witness`) naming the `after` asked for. Refusals are audited; a pull
that is answered is not (it carries no data, only signed heads, and an entry per pull
would only move the head it reads).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import select

from spe.db import session_scope
from spe.errors import Forbidden, NotAuthenticated
from spe.web import DbSession
from spe.wire.audit import (
    CHECKPOINTS_PATH,
    MAX_CHECKPOINTS,
    WITNESS,
    WITNESS_ROLE,
    NodeCheckpoints,
    SignedCheckpoint,
    witness_query_hash,
)

router = APIRouter(tags=["audit"])


@router.get(CHECKPOINTS_PATH, response_model=NodeCheckpoints)
def checkpoints(request: Request, session: DbSession,
                after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                x_spe_hub_context: Annotated[str | None, Header()] = None) -> NodeCheckpoints:
    ctx = request.app.state.ctx
    try:
        verifier = request.app.state.context_verifier
        if verifier is None:
            raise NotAuthenticated("this node has no hub certificate configured "
                                   "(SPE_PKI_DIR): it answers no hub calls")
        hub = verifier.verify(x_spe_hub_context, query_hash=witness_query_hash(after))
        if hub.sub != WITNESS or WITNESS_ROLE not in hub.roles:
            raise Forbidden("the audit checkpoints are for the hub's witness only")
    except (NotAuthenticated, Forbidden) as exc:
        with session_scope(ctx.sessions) as own:  # the request's transaction rolls back
            ctx.audit.record(own, actor="unknown", action="audit.checkpoints",
                             object=f"after:{after}", decision="deny", reason=exc.detail,
                             details={"client": request.client.host if request.client else ""})
        raise
    model = ctx.audit.checkpoint_model
    rows = session.execute(select(model).where(model.seq > after)
                           .order_by(model.seq, model.id).limit(MAX_CHECKPOINTS)).scalars()
    return NodeCheckpoints(node_id=ctx.name, checkpoints=[
        SignedCheckpoint(body=r.body, signature=r.signature, cert=r.cert) for r in rows])
