"""`POST /api/v1/query` on a node: only from its hub.

No bearer token here: the caller is the hub, authenticated by mutual TLS (the server asks
for a client certificate of the federation CA) and by the context it signs onto every
query (spe.wire.context). A request without that signature is refused (401) and audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel

from gateway.node.query import service
from spe.db import session_scope
from spe.errors import NotAuthenticated
from spe.web.responses import refusals
from spe.wire.query import NodeAnswer, Query

router = APIRouter(prefix="/api/v1", tags=["query"], responses=refusals(401, 403))
CONTEXT_HEADER = "X-SPE-Hub-Context"


class NodeQuery(BaseModel):
    query: Query


@router.post("/query", response_model=NodeAnswer)
def query(body: NodeQuery, request: Request,
          x_spe_hub_context: Annotated[str | None, Header()] = None) -> Response:
    app = request.app
    ctx = app.state.ctx
    query_hash = body.query.digest()
    try:
        verifier = app.state.context_verifier
        if verifier is None:
            raise NotAuthenticated("this node has no hub certificate configured "
                                   "(SPE_PKI_DIR): it answers no queries")
        hub_ctx = verifier.verify(x_spe_hub_context, query_hash=query_hash)
    except NotAuthenticated as exc:
        with session_scope(ctx.sessions) as own:
            ctx.audit.record(own, actor="unknown", action="query", object=query_hash,
                             decision="deny", reason=exc.detail,
                             details={"client": request.client.host if request.client
                                      else ""})
        raise
    # The request's transaction, opened here rather than by a DbSession dependency (which
    # would cost two more hops to the thread pool): committed before the answer is sent,
    # rolled back on any error.
    with session_scope(ctx.sessions) as session:
        answer = service.answer(session, body.query, hub_ctx,
                                node_id=app.state.node.node_id, policy=ctx.policy,
                                audit=ctx.audit, sessions=ctx.sessions,
                                query_hash=query_hash)
    # Serialised once, here: FastAPI would validate the NodeAnswer again to serialise it.
    return Response(answer.model_dump_json(), media_type="application/json")
