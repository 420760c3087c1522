"""The node's signed audit checkpoints, for its hub to keep as their witness (spe.wire.audit).

Only from the hub, like queries and jobs: the hub's door (gateway/node/trust: its pinned
certificate and a single-use context) with a context the hub signed for its witness
(`hub:audit-witness`) naming the `after` asked for. Refusals are audited; a pull that is
answered is not (it carries no data, only signed heads, and an entry per pull would only
move the head it reads).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from gateway.node.trust import HubCaller
from spe.errors import Forbidden
from spe.policy.gate import audit_refusal
from spe.web import DbSession
from spe.web.responses import refusals
from spe.wire.audit import (
    CHECKPOINTS_PATH,
    MAX_CHECKPOINTS,
    WITNESS,
    WITNESS_ROLE,
    NodeCheckpoints,
    SignedCheckpoint,
    witness_query_hash,
)

router = APIRouter(tags=["audit"], responses=refusals(401, 403, 409))


@router.get(CHECKPOINTS_PATH, response_model=NodeCheckpoints)
def checkpoints(request: Request, session: DbSession, hub: HubCaller,
                after: Annotated[int, Query(ge=0, le=2**62)] = 0) -> NodeCheckpoints:
    ctx = request.app.state.ctx
    obj = f"after:{after}"
    context = hub.bind(witness_query_hash(after), action="audit.checkpoints", obj=obj)
    if context.sub != WITNESS or WITNESS_ROLE not in context.roles:
        raise audit_refusal(ctx.audit, ctx.sessions,
                            Forbidden("the audit checkpoints are for the hub's witness only"),
                            actor=context.sub, action="audit.checkpoints", object=obj,
                            details={"client": request.client.host if request.client
                                     else ""})
    model = ctx.audit.checkpoint_model
    rows = session.execute(select(model).where(model.seq > after)
                           .order_by(model.seq, model.id).limit(MAX_CHECKPOINTS)).scalars()
    return NodeCheckpoints(node_id=ctx.name, checkpoints=[
        SignedCheckpoint(body=r.body, signature=r.signature, cert=r.cert) for r in rows])
