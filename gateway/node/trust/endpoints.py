"""`PUT /api/v1/suspensions`: the hub pushes the central suspension list (on every change),
through the hub's door; the node keeps the newest and refuses those users' contexts."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.node.trust import repository
from gateway.node.trust.door import HubCaller
from spe.errors import Conflict
from spe.web import DbSession
from spe.web.responses import refusals
from spe.wire.suspensions import SUSPENSIONS_PATH, SuspensionList

router = APIRouter(tags=["trust"], responses=refusals(401, 403, 409))


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
