"""`POST /api/v1/fed/rounds` (spe.wire.rounds.ROUNDS_PATH): one round of a federated
computation, only from the hub (mutual TLS and its signed context, whose `qh` is the
SHA-256 of the request's `digest()` and which names the permit and the researcher).

The node's own policy decides first (policies/federated `round`, on its copy of the
permit: active, naming the researcher, within this node's limits); then the step runs in
the sandbox over the permit's extract and its update passes the gate
(gateway/node/federated/step.py) before it is answered. Every round is audited with the
gate's decision: accepted (the arrays' names and shapes, the count, the privacy spent) or
refused (the gate's code and, for the operator, which name or shape). The answer is a
`RoundReply`, 200 whether the gate accepted or refused (the state says which); a policy
refusal is a 403 as for jobs. Updates go to the hub's aggregator, never to a researcher.
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Request

from gateway.node.federated.step import run_round
from gateway.node.permits.facts import permit_facts
from gateway.node.trust import HubCaller
from spe.db import session_scope
from spe.errors import Forbidden
from spe.policy.gate import decide_or_refuse
from spe.web import DbSession
from spe.web.responses import refusals
from spe.wire.rounds import ROUNDS_PATH, RoundReply, RoundRequest

router = APIRouter(prefix=ROUNDS_PATH.removesuffix("/rounds"), tags=["federated"],
                   responses=refusals(401, 403))
POLICY = "federated/round"


@router.post("/rounds", response_model=RoundReply, max_body_size=80 * 1024 * 1024)
def round_(body: RoundRequest, request: Request, session: DbSession,
           hub: HubCaller) -> RoundReply:
    ctx = request.app.state.ctx
    node = request.app.state.node
    obj = f"fed:{body.run}/{body.round}"
    hub_ctx = hub.bind(body.digest(), action="fed.round", obj=obj)
    facts = permit_facts(session, hub_ctx, date.today())
    session.rollback()  # nothing of this request's transaction is kept: the step is long
    details = {"permit": hub_ctx.permit, "app": body.app, "kind": body.kind,
               "round": body.round}
    decide_or_refuse(ctx.policy, POLICY, {
        "permit": facts, "limits": body.limits, "app": body.app, "kind": body.kind,
        "privacy": body.contract.privacy.model_dump() if body.contract.privacy else None},
        audit=ctx.audit, sessions=ctx.sessions, session=None, actor=hub_ctx.sub,
        action="fed.round", object=obj, details=details,
        refuse=lambda d: Forbidden(d.reason.removeprefix("denied: ")))
    # The gate's minimum of patients is the policy's (federated.gate), decided at the gate.
    outcome = run_round(body, pid=str(hub_ctx.permit), config=node, settings=ctx.settings,
                        policy=ctx.policy, sessions=ctx.sessions)
    reply = outcome.reply
    with session_scope(ctx.sessions) as own:
        ctx.audit.record(own, actor=hub_ctx.sub, action="fed.gate", object=obj,
                         decision="allow" if reply.state == "accepted" else "deny",
                         reason=reply.reason or "accepted: the update left for the hub",
                         details={**details, "state": reply.state, **outcome.audit})
    return reply
