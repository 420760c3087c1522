"""`/api/v1/federation/nodes`: an admin lists, adds and removes institutions at the running
centre (admin role at the policy door; every change audited in its transaction)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from gateway.hub.membership.schemas import NodeIn, NodeOut, RemovedOut
from spe.db import session_scope
from spe.errors import Conflict, SPEError
from spe.web import Caller
from spe.web.responses import refusals

router = APIRouter(prefix="/api/v1/federation", tags=["federation"],
                   responses=refusals(401, 403, 404, 409, 422))


class NoFederation(SPEError):
    status_code = 409
    error = "federation_not_configured"


def _membership(request: Request):
    hub = request.app.state.hub
    membership = getattr(hub.fanout, "membership", None) if hub is not None else None
    if membership is None:
        raise NoFederation("this centre has no hub (SPE_PKI_DIR with hub.crt and hub.key): "
                           "it calls no nodes")
    return membership


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(_: Caller, request: Request) -> list[NodeOut]:
    membership = _membership(request)
    with session_scope(request.app.state.ctx.sessions) as session:
        return membership.listing(session)


@router.post("/nodes", response_model=NodeOut, status_code=201)
async def add_node(body: NodeIn, caller: Caller, request: Request) -> NodeOut:
    """Add an institution (or change its URL): the hub calls it from the next query on."""
    ctx, membership = request.app.state.ctx, _membership(request)

    def record() -> NodeOut:
        with session_scope(ctx.sessions) as session:
            return membership.add(session, body.node_id, body.url, actor=caller.id,
                                  reason=body.reason, audit=ctx.audit,
                                  production=ctx.settings.environment == "production")

    added = await run_in_threadpool(record)
    membership.invalidate()
    return added


@router.delete("/nodes/{node_id}", response_model=RemovedOut)
async def remove_node(
    node_id: Annotated[str, Path(max_length=253)], caller: Caller, request: Request,
    revoke: Annotated[bool, Query(
        description="Also revoke its certificates (the CA's folder must be SPE_PKI_DIR)")]
    = False,
    reason: Annotated[str, Query(max_length=500)] = "",
) -> RemovedOut:
    """Remove an institution: the hub calls it no more from now on; with `revoke`, its
    certificates are revoked and the new revocation list sent to every node."""
    ctx, membership = request.app.state.ctx, _membership(request)
    pki_dir = ctx.settings.pki_dir
    if revoke and (pki_dir is None or not (pki_dir / "ca.key").is_file()):
        raise Conflict("the federation CA is not at this centre (no ca.key in SPE_PKI_DIR): "
                       "remove without revoke, then revoke at the CA with `spe pki revoke` "
                       "and copy its crl.pem into the centre's SPE_PKI_DIR")

    def record() -> list[str]:
        with session_scope(ctx.sessions) as session:
            membership.remove(session, node_id, actor=caller.id, reason=reason,
                              audit=ctx.audit)
            if not revoke:
                return []
            from spe.pki.revocation import revoke_name

            serials = revoke_name(pki_dir, node_id, reason="cessation-of-operation")
            ctx.audit.record(session, actor=caller.id, action="pki.revoke", object=node_id,
                             decision="allow", reason=reason or "-",
                             details={"serials": serials})
            return serials

    serials = await run_in_threadpool(record)
    membership.invalidate()
    pushed: dict[str, str] = {}
    pusher = getattr(request.app.state, "crl_push", None)
    if serials and pusher is not None:
        pushed = await pusher.push_now()
    return RemovedOut(node_id=node_id, removed=True, revoked=serials, crl_pushed=pushed)
