"""An institution's review of job code at its node: only from its hub (mutual TLS and the
hub's signed context, as every job route), on behalf of an approver of this very
institution (the context's `inst`), as policies/jobs `code_review_access` decides here
again after the hub did. The contract is spe.wire.code_review.

- `GET /api/v1/code-reviews`: the code awaiting this institution's approval, per permit.
- `GET /api/v1/code-reviews/{pid}/{sha256}`: its files, the diff against the permit's code
  approved last, the researchers, the permit's decisions so far.
- `POST /api/v1/code-reviews/{pid}/{sha256}`: approve (every held job of that permit with
  that code goes to the workers; later jobs with the same code run at once) or reject
  (they fail with the approver's reason). Recorded in `code_approvals` and audited (who,
  which code, which permit, the decision), in the transaction that moves the jobs.

Every refusal is audited in its own transaction.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Request

from gateway.node.jobs import approvals
from gateway.node.jobs.endpoints import _audit_own, _defer
from gateway.node.permits import repository as permits
from gateway.node.trust import HubCall, HubCaller
from spe.errors import Conflict, Forbidden, NotFound
from spe.policy.gate import decide_or_refuse
from spe.web import DbSession
from spe.web.responses import refusals
from spe.wire.code_review import (
    REVIEWS_PATH,
    CodeDecision,
    CodeReviewDetail,
    CodeReviewSummary,
    DecisionOutcome,
    rejected_reason,
    review_hash,
)
from spe.wire.context import HubContext

router = APIRouter(prefix=REVIEWS_PATH, tags=["code review"],
                   responses=refusals(401, 403, 404, 409))
ACCESS_POLICY = "jobs/code_review_access"

Pid = Annotated[str, Path(min_length=1, max_length=32)]
Sha = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", min_length=64, max_length=64)]


def _allowed(request: Request, hub_ctx: HubContext, action: str, obj: str, *,
             members: list[str], researchers: list[str]) -> None:
    """policies/jobs `code_review_access`, at this node: a refusal is audited and a 403."""
    ctx = request.app.state.ctx
    decide_or_refuse(ctx.policy, ACCESS_POLICY, {
        "action": action,
        "subject": {"id": hub_ctx.sub, "roles": list(hub_ctx.roles),
                    "institution": hub_ctx.inst},
        "node": request.app.state.node.node_id,
        "members": members, "researchers": researchers},
        audit=ctx.audit, sessions=ctx.sessions, session=None, actor=hub_ctx.sub,
        action=f"code.review.{action}", object=obj,
        refuse=lambda d: Forbidden(d.reason.removeprefix("denied: ")))


def _summaries(session, node_id: str) -> list[CodeReviewSummary]:
    by_code: dict[tuple[str, str], list] = {}
    for job in approvals.held(session):
        by_code.setdefault((job.pid, approvals.sha256_of(job.code)), []).append(job)
    out = []
    for (pid, sha), jobs in by_code.items():
        base = approvals.last_approved(session, pid, other_than=sha)
        out.append(CodeReviewSummary(
            node_id=node_id, pid=pid, code_sha256=sha,
            researchers=sorted({j.user_id for j in jobs}), jobs=approvals.held_jobs(jobs),
            previous_sha256=base.code_sha256 if base else None))
    return out


@router.get("", response_model=list[CodeReviewSummary])
def awaiting(request: Request, session: DbSession, hub: HubCaller) -> list[CodeReviewSummary]:
    hub_ctx = hub.bind(review_hash("list"), action="code.review.list", obj="code-reviews")
    _allowed(request, hub_ctx, "list", "code-reviews", members=[], researchers=[])
    node_id = request.app.state.node.node_id
    # Code of permits the approver is named on, or that they sent, is not theirs to review.
    out = []
    for summary in _summaries(session, node_id):
        held_permit = permits.get(session, summary.pid)
        members = list(held_permit.members) if held_permit else []
        if hub_ctx.sub not in members and hub_ctx.sub not in summary.researchers:
            out.append(summary)
    return out


def _load(request: Request, session, hub: HubCall, action: str, pid: str, sha: str,
          subject: str) -> tuple[HubContext, list, bytes | None]:
    """The bound context, the held jobs of this code (oldest first) and its archive (from a
    held job, or as decided before), once the policy lets the approver see it."""
    obj = f"code:{sha}"
    hub_ctx = hub.bind(subject, action=f"code.review.{action}", obj=obj)
    held_permit = permits.get(session, pid)
    jobs = approvals.held(session, pid, sha)
    decided = approvals.latest(session, pid, sha)
    _allowed(request, hub_ctx, action, obj,
             members=list(held_permit.members) if held_permit else [],
             researchers=sorted({j.user_id for j in jobs}))
    code = jobs[0].code if jobs else (decided.code if decided else None)
    if code is None:
        _audit_own(request, actor=hub_ctx.sub, action=f"code.review.{action}", object=obj,
                   decision="deny", reason="no such code under this permit here",
                   details={"permit": pid})
        raise NotFound(f"no code {sha} under permit {pid} at this node")
    return hub_ctx, jobs, code


@router.get("/{pid}/{sha256}", response_model=CodeReviewDetail)
def read(pid: Pid, sha256: Sha, request: Request, session: DbSession,
         hub: HubCaller) -> CodeReviewDetail:
    hub_ctx, jobs, code = _load(request, session, hub, "read", pid, sha256,
                                review_hash("read", pid, sha256))
    assert code is not None
    node_id = request.app.state.node.node_id
    base = approvals.last_approved(session, pid, other_than=sha256)
    decided = approvals.latest(session, pid, sha256)
    ctx = request.app.state.ctx
    ctx.audit.record(session, actor=hub_ctx.sub, action="code.review.read",
                     object=f"code:{sha256}", decision="allow",
                     reason=f"read for review at {node_id}",
                     details={"permit": pid, "held_jobs": [j.id for j in jobs]})
    return CodeReviewDetail(
        node_id=node_id, pid=pid, code_sha256=sha256,
        researchers=sorted({j.user_id for j in jobs}), jobs=approvals.held_jobs(jobs),
        previous_sha256=base.code_sha256 if base else None,
        files=approvals.files_of(code),
        diff=approvals.diff(base.code if base else None, code),
        decisions=approvals.decisions(session, pid),
        decided=decided.decision if decided else None)  # type: ignore[arg-type]


@router.post("/{pid}/{sha256}", response_model=DecisionOutcome)
def decide(pid: Pid, sha256: Sha, body: CodeDecision, request: Request, session: DbSession,
           background: BackgroundTasks, hub: HubCaller) -> DecisionOutcome:
    hub_ctx, jobs, code = _load(request, session, hub, "decide", pid, sha256,
                                review_hash("decide", pid, sha256, body.decision, body.reason))
    assert code is not None
    node_id = request.app.state.node.node_id
    obj = f"code:{sha256}"
    if not jobs:  # a decision is on code a job brought here and still waits with
        _audit_own(request, actor=hub_ctx.sub, action="code.review.decide", object=obj,
                   decision="deny", reason="no job of this code awaits approval",
                   details={"permit": pid, "decision": body.decision})
        raise Conflict(f"no job with code {sha256} awaits approval under permit {pid}")
    approvals.record(session, pid=pid, sha256=sha256, code=code, decision=body.decision,
                     approver=hub_ctx.sub, reason=body.reason)
    ids = [j.id for j in jobs]
    if body.decision == "approve":
        released, failed = approvals.release(session, ids), []
    else:
        released = []
        failed = approvals.fail(session, ids, rejected_reason(sha256, node_id, body.reason))
    ctx = request.app.state.ctx
    ctx.audit.record(session, actor=hub_ctx.sub, action="code.review.decide", object=obj,
                     decision="allow", reason=f"{body.decision}: {body.reason}",
                     details={"permit": pid, "code_sha256": sha256, "node": node_id,
                              "decision": body.decision, "released": released,
                              "failed": failed})
    dispatcher = getattr(request.app.state, "job_dispatcher", None)
    if dispatcher is not None:  # after the commit; a lost deferral is made good by a sweep
        for job_id in released:
            background.add_task(_defer, dispatcher, job_id)
    return DecisionOutcome(node_id=node_id, pid=pid, code_sha256=sha256,
                           decision=body.decision, released=released, failed=failed)


__all__ = ["router"]
