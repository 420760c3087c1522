"""`PUT /api/v1/permits/{pid}`: the hub pushes a permit's signed document (on issue and on
every change of status). Like queries, only the hub can: through the hub's door
(gateway/node/trust: its certificate, and a single-use context naming the document's
SHA-256), and the document itself must carry the hub's signature.

Outside the permits package because a permit that stops also cancels its jobs: jobs
depend on permits, so permits must not import jobs (.importlinter).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from gateway.node.jobs import repository as jobs
from gateway.node.permits import repository
from gateway.node.permits.models import NodePermit
from gateway.node.trust import HubCaller
from spe.db import session_scope
from spe.errors import Conflict, NotAuthenticated
from spe.web import DbSession
from spe.web.responses import refusals
from spe.wire.permit import document_hash, verify_document

router = APIRouter(prefix="/api/v1", tags=["permits"], responses=refusals(401, 403, 409))


class PermitPush(BaseModel):
    document: str = Field(min_length=10, max_length=100_000)


class PermitAck(BaseModel):
    pid: str
    seq: int
    status: str


@router.put("/permits/{pid}", response_model=PermitAck)
def receive(pid: str, body: PermitPush, request: Request, session: DbSession,
            hub: HubCaller) -> PermitAck:
    app = request.app
    ctx = app.state.ctx
    node_id = app.state.node.node_id
    hub.bind(document_hash(body.document), action="permit.receive", obj=pid)
    try:
        if app.state.hub_public_key is None:
            raise NotAuthenticated("this node has no hub certificate configured (SPE_PKI_DIR)")
        doc = verify_document(body.document, app.state.hub_public_key)
        if doc.pid != pid:
            raise NotAuthenticated(f"the document is for {doc.pid}, not {pid}")
    except NotAuthenticated as exc:
        with session_scope(ctx.sessions) as own:
            ctx.audit.record(own, actor="unknown", action="permit.receive", object=pid,
                             decision="deny", reason=exc.detail)
        raise
    current = repository.get(session, pid)
    if current is not None and current.seq >= doc.seq:
        if current.seq == doc.seq:
            return PermitAck(pid=pid, seq=current.seq, status=current.status)
        raise Conflict(f"{pid}: the node holds a newer document (seq {current.seq} > "
                       f"{doc.seq}); an older one never replaces it")
    values = {"seq": doc.seq, "status": doc.status, "members": doc.members,
              "datasets": doc.datasets.get(node_id, []), "form": doc.form,
              "start": doc.start, "end": doc.end, "document": body.document,
              "received_at": datetime.now(UTC)}
    if current is None:
        repository.add(session, NodePermit(pid=pid, **values))
    else:
        for key, value in values.items():
            setattr(current, key, value)
    if doc.status != "issued":
        cancelled = jobs.cancel_for_permit(session, pid, reason=f"permit {doc.status}")
        if cancelled:
            ctx.audit.record(session, actor="hub", action="job.cancel", object=pid,
                             decision="info", reason=f"permit {doc.status}",
                             details={"jobs": cancelled})
    ctx.audit.record(session, actor="hub", action="permit.receive", object=pid,
                     decision="allow", reason=f"{doc.status} (seq {doc.seq})",
                     details={"members": doc.members, "datasets": values["datasets"],
                              "start": str(doc.start), "end": str(doc.end)})
    return PermitAck(pid=pid, seq=doc.seq, status=doc.status)
