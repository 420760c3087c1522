"""An institution's review of job code, where its approvers act for it: at the centre, as
they review permit applications (spe/permits), the hub passing each step to the
institution's node, which holds the jobs and the code and decides again.

The hub checks the caller first (policies/jobs `code_review_access`: an approver of that
very institution, not named on the permit by the hub's record), then calls the node with
a context that names the approver's institution and the very step
(`spe.wire.code_review.review_hash`), so a context cannot be turned into another
decision. The node's answer is read through the contract's schemas; its refusals come
back as refusals with the node's reason. Every decision is audited here and at the node.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from gateway.hub.calls import call_node
from gateway.hub.service import FederationNotConfigured, Hub
from spe.db import session_scope
from spe.errors import Conflict, Forbidden, NotFound, SPEError
from spe.identity import Principal
from spe.permits import repository as permits_repository
from spe.policy.gate import decide_or_refuse
from spe.web import AppContext
from spe.wire.code_review import (
    REVIEWS_PATH,
    CodeDecision,
    CodeReviewDetail,
    CodeReviewSummary,
    DecisionOutcome,
    review_hash,
)

ACCESS_POLICY = "jobs/code_review_access"


class NodeUnavailable(SPEError):
    status_code = 503
    error = "node_unavailable"


def _members(ctx: AppContext, pid: str | None) -> list[str]:
    if pid is None:
        return []
    with session_scope(ctx.sessions) as session:
        permit = permits_repository.get(session, pid)
        if permit is None:
            return []
        return [m.user_id for m in permit.members] + [permit.applicant]


def _check(ctx: AppContext, caller: Principal, node_id: str, action: str, obj: str,
           pid: str | None = None) -> None:
    members = _members(ctx, pid)
    decide_or_refuse(ctx.policy, ACCESS_POLICY, {
        "action": action,
        "subject": {"id": caller.id, "roles": list(caller.roles),
                    "institution": caller.institution},
        "node": node_id, "members": members, "researchers": []},
        audit=ctx.audit, sessions=ctx.sessions, session=None, actor=caller.id,
        action=f"code.review.{action}", object=obj, details={"node": node_id, "permit": pid},
        refuse=lambda d: Forbidden(d.reason.removeprefix("denied: ")))


def _hub(hub: Hub | None, node_id: str) -> Hub:
    if hub is None or not hub.fanout.nodes:
        raise FederationNotConfigured("the hub has no nodes (SPE_FEDERATION_NODES) or no "
                                      "PKI (SPE_PKI_DIR)")
    if node_id not in hub.fanout.nodes:
        raise NotFound(f"{node_id} is not an institution of this federation")
    return hub


async def _call(hub: Hub, caller: Principal, node_id: str, method: str, path: str,
                subject: str, pid: str | None, json: Any = None) -> Any:
    context = hub.signer.sign(user=caller.id, roles=list(caller.roles), tier="permit",
                              query_hash=subject, node_id=node_id, permit=pid,
                              institution=caller.institution)
    status, answer = await call_node(hub, node_id, method, path, context, json=json)
    if status == 200:
        return answer
    if status == 0:
        raise NodeUnavailable(f"{node_id}: {answer}")
    refusal = {403: Forbidden, 404: NotFound, 409: Conflict}.get(status)
    if refusal is None:
        raise NodeUnavailable(f"{node_id} answered HTTP {status}: {answer}")
    raise refusal(f"{node_id}: {answer}")


def _read(model: type[BaseModel], answer: Any, node_id: str) -> Any:
    try:
        return model.model_validate(answer)
    except ValidationError:
        raise NodeUnavailable(f"{node_id}'s answer is not a code review") from None


async def awaiting(ctx: AppContext, hub: Hub | None, caller: Principal
                   ) -> list[CodeReviewSummary]:
    """The code awaiting review at the caller's institution."""
    node_id = caller.institution or ""
    await run_in_threadpool(_check, ctx, caller, node_id, "list", "code-reviews")
    hub = _hub(hub, node_id)
    answer = await _call(hub, caller, node_id, "GET", REVIEWS_PATH, review_hash("list"), None)
    if not isinstance(answer, list):
        raise NodeUnavailable(f"{node_id}'s answer is not a list of code reviews")
    return [_read(CodeReviewSummary, a, node_id) for a in answer]


async def read(ctx: AppContext, hub: Hub | None, caller: Principal, node_id: str, pid: str,
               sha256: str) -> CodeReviewDetail:
    await run_in_threadpool(_check, ctx, caller, node_id, "read", f"code:{sha256}", pid)
    hub = _hub(hub, node_id)
    answer = await _call(hub, caller, node_id, "GET", f"{REVIEWS_PATH}/{pid}/{sha256}",
                         review_hash("read", pid, sha256), pid)
    return _read(CodeReviewDetail, answer, node_id)


async def decide(ctx: AppContext, hub: Hub | None, caller: Principal, node_id: str, pid: str,
                 sha256: str, body: CodeDecision) -> DecisionOutcome:
    obj = f"code:{sha256}"
    await run_in_threadpool(_check, ctx, caller, node_id, "decide", obj, pid)
    hub = _hub(hub, node_id)
    answer = await _call(hub, caller, node_id, "POST", f"{REVIEWS_PATH}/{pid}/{sha256}",
                         review_hash("decide", pid, sha256, body.decision, body.reason), pid,
                         json=body.model_dump())
    outcome: DecisionOutcome = _read(DecisionOutcome, answer, node_id)

    def audit() -> None:
        with session_scope(ctx.sessions) as session:
            ctx.audit.record(session, actor=caller.id, action="code.review.decide",
                             object=obj, decision="allow",
                             reason=f"{body.decision} at {node_id}: {body.reason}",
                             details={"node": node_id, "permit": pid, "code_sha256": sha256,
                                      "decision": body.decision,
                                      "released": outcome.released,
                                      "failed": outcome.failed})

    await run_in_threadpool(audit)
    return outcome


__all__ = ["awaiting", "decide", "read"]
