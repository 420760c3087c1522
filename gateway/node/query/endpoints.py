"""`POST /api/v1/query` on a node: only from its hub.

No bearer token here: the caller is the hub, authenticated by its certificate and by the
context it signs onto every query (spe.wire.context), both checked by the node's hub door
(gateway/node/trust). Every refusal is audited.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from gateway.node.query import service
from gateway.node.trust import HubCaller
from spe.db import session_scope
from spe.web.responses import refusals
from spe.wire.query import NodeAnswer, Query

router = APIRouter(prefix="/api/v1", tags=["query"], responses=refusals(401, 403, 409))


class NodeQuery(BaseModel):
    query: Query


@router.post("/query", response_model=NodeAnswer)
def query(body: NodeQuery, request: Request, hub: HubCaller) -> Response:
    app = request.app
    ctx = app.state.ctx
    query_hash = body.query.digest()
    hub_ctx = hub.bind(query_hash, action="query", obj=query_hash)
    # The request's transaction, opened here rather than by a DbSession dependency (which
    # would cost two more hops to the thread pool): committed before the answer is sent,
    # rolled back on any error.
    with session_scope(ctx.sessions) as session:
        answer = service.answer(session, body.query, hub_ctx,
                                node_id=app.state.node.node_id, policy=ctx.policy,
                                audit=ctx.audit, sessions=ctx.sessions,
                                cellkey_secret=app.state.cellkey_secret.get,
                                query_hash=query_hash)
    # Serialised once, here: FastAPI would validate the NodeAnswer again to serialise it.
    return Response(answer.model_dump_json(), media_type="application/json")
