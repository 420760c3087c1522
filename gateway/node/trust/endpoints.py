"""`PUT /api/v1/suspensions`: the hub pushes the central suspension list (on every change),
through the hub's door; the node keeps the newest and refuses those users' contexts."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.node.trust import repository
from gateway.node.trust.door import HubCaller
from spe.errors import Conflict, SPEError
from spe.policy.gate import audit_refusal
from spe.web import DbSession
from spe.web.responses import refusals
from spe.wire.revocation import CRL_PATH, CrlHeld, CrlPush
from spe.wire.suspensions import SUSPENSIONS_PATH, SuspensionList

router = APIRouter(tags=["trust"], responses=refusals(401, 403, 409, 422))


@router.put(SUSPENSIONS_PATH, response_model=SuspensionList)
def receive(body: SuspensionList, request: Request, session: DbSession,
            hub: HubCaller) -> SuspensionList:
    ctx = request.app.state.ctx
    hub.bind(body.digest(), action="suspensions.receive", obj=f"epoch:{body.epoch}",
             pushed_epoch=body.epoch)
    outcome = repository.store_suspensions(session, body.epoch, body.users)
    if outcome == "older":
        raise Conflict(f"the node holds a newer suspension list than epoch {body.epoch}")
    if outcome == "held":  # the hub's periodic push of what the node has
        return body
    ctx.audit.record(session, actor="hub", action="suspensions.receive",
                     object=f"epoch:{body.epoch}", decision="allow",
                     reason=f"{len(body.users)} user(s) suspended",
                     details={"users": body.users})
    return body


@router.put(CRL_PATH, response_model=CrlHeld)
def receive_crl(body: CrlPush, request: Request, session: DbSession,
                hub: HubCaller) -> CrlHeld:
    """The CA's revocation list, pushed by the hub: kept if the CA signed it and it is newer
    than the node's (the node's TLS server re-reads it on its next connection)."""
    from spe.pki import PkiError
    from spe.pki.revocation import accept_crl

    ctx = request.app.state.ctx
    hub.bind(body.digest(), action="crl.receive", obj="crl")
    pki_dir = ctx.settings.pki_dir
    if pki_dir is None:
        raise Conflict("this node has no SPE_PKI_DIR to keep a revocation list in")
    try:
        outcome, number = accept_crl(pki_dir, body.crl.encode())
    except PkiError as exc:  # audited in its own transaction: the request's rolls back
        raise audit_refusal(ctx.audit, ctx.sessions, BadCrl(exc.detail), actor="hub",
                            action="crl.receive", object="crl") from None
    if outcome == "older":
        raise Conflict(f"the node holds a newer revocation list than number {number}")
    if outcome == "stored":
        ctx.audit.record(session, actor="hub", action="crl.receive", object=f"crl:{number}",
                         decision="allow", reason="the CA's revocation list, newer than "
                         "the node's")
    return CrlHeld(number=number, outcome=outcome)


class BadCrl(SPEError):
    status_code = 422
    error = "bad_revocation_list"
