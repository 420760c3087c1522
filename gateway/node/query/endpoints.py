"""`POST /api/v1/query` on a node: only from its hub.

No bearer token here: the caller is the hub, authenticated by its certificate and by the
context it signs onto every query (spe.wire.context), both checked by the node's hub door
(gateway/node/trust). Every refusal is audited.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from gateway.node.query import service, statistics
from gateway.node.trust import HubCaller
from spe.db import session_scope
from spe.errors import SPEError
from spe.web.responses import refusals
from spe.wire.query import STATISTICS, NodeAnswer, Query, Step, step_digest

router = APIRouter(prefix="/api/v1", tags=["query"], responses=refusals(401, 403, 409))


class NodeQuery(BaseModel):
    query: Query
    # A round of a statistic computed in rounds (quantiles, logistic regression): the hub's
    # step, named with the query by the hub's context (`step_digest`).
    step: Step | None = None


@router.post("/query", response_model=NodeAnswer)
def query(body: NodeQuery, request: Request, hub: HubCaller) -> Response:
    app = request.app
    ctx = app.state.ctx
    query_hash = body.query.digest()
    subject = step_digest(query_hash, body.step)
    hub_ctx = hub.bind(subject, action="query", obj=subject)
    if body.step is not None and body.query.answer.kind not in ("quantiles", "logistic"):
        raise SPEError(f"a {body.query.answer.kind} answer has no rounds")
    # The request's transaction, opened here rather than by a DbSession dependency (which
    # would cost two more hops to the thread pool): committed before the answer is sent,
    # rolled back on any error.
    with session_scope(ctx.sessions) as session:
        if body.query.answer.kind in STATISTICS:
            secret = app.state.cellkey_secret
            answer = statistics.answer(
                session, body.query, hub_ctx, node_id=app.state.node.node_id,
                policy=ctx.policy, audit=ctx.audit, sessions=ctx.sessions,
                secret=None if hub_ctx.tier == "permit" else secret.get(), step=body.step,
                query_hash=query_hash, subject=subject)
        else:
            answer = service.answer(session, body.query, hub_ctx,
                                    node_id=app.state.node.node_id, policy=ctx.policy,
                                    audit=ctx.audit, sessions=ctx.sessions,
                                    cellkey_secret=app.state.cellkey_secret.get,
                                    query_hash=query_hash)
    # Serialised once, here: FastAPI would validate the NodeAnswer again to serialise it.
    return Response(answer.model_dump_json(), media_type="application/json")
