"""The jobs API of a node: only from its hub, like queries (mutual TLS and the hub's signed
context, `X-SPE-Hub-Context`; spe.wire.context).

- `POST /api/v1/jobs` {"code": base64 of a `pack_code` tar.gz, "entry", "limits",
  "environment"}: the context's `qh` must be the SHA-256 (hex) of the decoded code and
  name a permit; the node's own copy of the permit, the limits and the analysis
  environment (allowed here and installed) decide (policies/jobs), then the job is queued
  for the node's workers (202), or held until the institution's approvers approve its
  code when the policy's `code_review` says so (gateway/node/jobs/review_endpoints.py).
- `GET /api/v1/jobs/{job_id}`: the context's `qh` is the SHA-256 of the job id; only the
  job's own user, or an output checker or admin the hub vouches for (policies/jobs
  `access`), reads its `spe.wire.jobs.JobStatus`: the state and the runner's words, never
  the job's log, output names, exit code or a count of the extract.
- `POST /api/v1/jobs/{job_id}/cancel`: likewise, the job's own user only; a running job's
  worker notices at its next heartbeat and kills the sandbox.
- `GET /api/v1/jobs/{job_id}/outputs`: a succeeded job's outputs (its log among them), or
  a failed or timed-out job's log alone, for the central airlock, to the hub's airlock
  only (role `airlock`; not even the job's own user reads them here). Checked again now
  and merged with the worker's report, which also scanned them for the extract's ids and
  dates; what is blocked never leaves the node, only its name and reasons, for the checkers.

Every submission and cancellation is audited, and so is every refusal.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import date
from pathlib import Path
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session

from gateway.node.jobs import approvals
from gateway.node.jobs import repository as repo
from gateway.node.jobs.models import NodeJob
from gateway.node.permits.facts import permit_facts
from gateway.node.trust import HubCall, HubCaller
from spe.airlock import (
    NO_VERDICT,
    AirlockPolicyError,
    OutputRules,
    check_outputs,
    rules_from_policy,
)
from spe.airlock.report import Place, places_from, worst
from spe.airlock.review.storage import NotCopied, read_regular
from spe.db import session_scope
from spe.errors import Conflict, Forbidden, NotFound, SPEError, validation_reason
from spe.policy.gate import audit_refusal, decide_or_refuse
from spe.sandbox import Limits, environments
from spe.web import DbSession
from spe.web.responses import refusals
from spe.wire.code_review import awaiting_reason
from spe.wire.context import HubContext
from spe.wire.jobs import (
    AWAITING_APPROVAL,
    FINAL,
    JOBS_PATH,
    LOG_NAME,
    MAX_CODE_B64,
    QUEUED,
    RAN,
    STAGING,
    SUCCEEDED,
    TOO_LARGE_RESPONSE,
    InvalidJob,
    JobAccepted,
    JobRefused,
    JobStatus,
    JobSubmission,
    NoOutputs,
    StagingProgress,
    StagingSummary,
    decode_code,
    public_reason,
)
from spe.wire.outputs import JobOutputs, OutputFile

router = APIRouter(prefix=JOBS_PATH.removesuffix("/jobs"), tags=["jobs"],
                   responses=refusals(401, 403, 409))
log = logging.getLogger(__name__)
POLICY = "jobs/decision"
ACCESS_POLICY = "jobs/access"  # who reads, cancels and collects a job


def code_hash(code: bytes) -> str:
    return hashlib.sha256(code).hexdigest()


def job_hash(job_id: str) -> str:
    return hashlib.sha256(job_id.encode()).hexdigest()


def staging_summary_path(work_dir: Path, job_id: str) -> Path:
    """Where the node's stage step leaves a summary of the job's extract (outside the job's
    own folder, which the worker empties before each attempt)."""
    return work_dir / f"{job_id}.staging.json"


def staging_progress_path(work_dir: Path, job_id: str) -> Path:
    """Where the worker leaves how far the job's staging is (`StagingProgress`)."""
    return work_dir / f"{job_id}.progress.json"


def _audit_own(request: Request, **entry: Any) -> None:
    """An entry in its own transaction: the request's is rolled back on a refusal."""
    ctx = request.app.state.ctx
    with session_scope(ctx.sessions) as own:
        ctx.audit.record(own, **entry)


@router.post("/jobs", response_model=JobAccepted, status_code=202,
             responses=TOO_LARGE_RESPONSE,
             max_body_size=MAX_CODE_B64 + 1024 * 1024)  # the code, and room for the rest
def submit(body: JobSubmission, request: Request, session: DbSession,
           background: BackgroundTasks, hub: HubCaller) -> JobAccepted:
    app = request.app
    ctx = app.state.ctx
    code = decode_code(body.code)  # the limit the hub applied too (spe.wire.jobs)
    digest = code_hash(code)
    hub_ctx = hub.bind(digest, action="job.submit", obj=f"code:{digest}")

    def refuse(reason: str, error: type[SPEError] = JobRefused) -> SPEError:
        _audit_own(request, actor=hub_ctx.sub, action="job.submit", object=f"code:{digest}",
                   decision="deny", reason=reason, details={"permit": hub_ctx.permit})
        return error(reason)

    try:
        limits = Limits(**body.limits)
    except ValidationError as exc:  # in words, each field: no pydantic dump
        raise refuse(f"limits are not valid: {validation_reason(exc.errors())}"[:500],
                     InvalidJob) from None
    except TypeError as exc:
        raise refuse(f"limits are not valid: {exc}"[:500], InvalidJob) from None
    # The environment must be one the node's policy allows and one built here; the worker
    # looks it up again when the job runs (an environment removed meanwhile fails it).
    node = app.state.node
    approved = (approvals.latest(session, hub_ctx.permit, digest)
                if hub_ctx.permit is not None else None)
    decision = decide_or_refuse(ctx.policy, POLICY, {
        "permit": permit_facts(session, hub_ctx, date.today()),
        "limits": limits.model_dump(), "environment": body.environment,
        "installed": sorted(environments.installed(ctx.settings)),
        "node": {"id": node.node_id, "code_review": node.code_review or None,
                 "registry": list(node.code_registry)},
        "code": {"sha256": digest, "approval": approved.decision if approved else None}},
        audit=ctx.audit, sessions=ctx.sessions, session=None, actor=hub_ctx.sub,
        action="job.submit", object=f"code:{digest}",
        details={"permit": hub_ctx.permit, "environment": body.environment},
        refuse=lambda d: JobRefused(d.reason))
    hold = decision.values.get("hold")
    if not isinstance(hold, bool):  # fail closed: an answer that says not whether to hold
        raise refuse("the policy's answer does not say whether the code must be approved")
    job = repo.enqueue(session, pid=str(hub_ctx.permit), user_id=hub_ctx.sub, code=code,
                       entry=body.entry, limits=limits, environment=body.environment,
                       state=AWAITING_APPROVAL if hold else QUEUED,
                       reason=awaiting_reason(digest, node.node_id) if hold else "")
    ctx.audit.record(session, actor=hub_ctx.sub, action="job.submit", object=f"job:{job.id}",
                     decision="allow", reason=decision.reason,
                     details={"permit": job.pid, "code_sha256": digest, "entry": job.entry,
                              "limits": job.limits, "environment": job.environment,
                              "node": node.node_id,
                              "code_review": decision.values.get("code_review"),
                              "held": hold})
    dispatcher = getattr(app.state, "job_dispatcher", None)
    if dispatcher is not None and not hold:  # after the commit; a sweep makes good a loss
        background.add_task(_defer, dispatcher, job.id)
    return JobAccepted(job_id=job.id, state=job.state)


def _defer(dispatcher, job_id: str) -> None:
    try:
        dispatcher.defer(job_id)
    except Exception:  # the job stays queued; the next sweep defers it again
        log.exception("job %s: deferring to the task queue failed", job_id)


def _job_for(request: Request, session: Session, job_id: str, hub: HubCall,
             action: str) -> tuple[NodeJob, HubContext]:
    """The job, if the hub's context lets its subject do `action` ("read", "cancel",
    "collect") to it (policies/jobs `access`)."""
    audited = "job.outputs" if action == "collect" else f"job.{action}"
    hub_ctx = hub.bind(job_hash(job_id), action=audited, obj=f"job:{job_id}")
    ctx = request.app.state.ctx
    job = repo.get(session, job_id)
    if job is None:
        raise audit_refusal(ctx.audit, ctx.sessions, NotFound("no such job at this node"),
                            actor=hub_ctx.sub, action=audited, object=f"job:{job_id}")
    decide_or_refuse(ctx.policy, ACCESS_POLICY, {
        "action": action, "subject": {"id": hub_ctx.sub, "roles": list(hub_ctx.roles)},
        "job": {"user_id": job.user_id, "pid": job.pid}, "permit": hub_ctx.permit},
        audit=ctx.audit, sessions=ctx.sessions, session=None, actor=hub_ctx.sub,
        action=audited, object=f"job:{job_id}",
        refuse=lambda d: Forbidden(d.reason.removeprefix("denied: ")))
    return job, hub_ctx


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def status_of(job: NodeJob, node_id: str, work_dir: Path | None) -> JobStatus:
    """What the job's researcher (and the hub) may read before any review: the state and
    the runner's words. The sandbox's result, the airlock's report and the staging report
    stay at the node."""
    staging = None
    if work_dir is not None:
        try:
            staging = StagingSummary.model_validate_json(
                staging_summary_path(work_dir, job.id).read_text())
        except (OSError, ValueError):
            staging = None
    progress = None
    if work_dir is not None and job.state == STAGING:
        try:
            progress = StagingProgress.model_validate_json(
                staging_progress_path(work_dir, job.id).read_text())
        except (OSError, ValueError):
            progress = None
    return JobStatus(
        job_id=job.id, node_id=node_id, pid=job.pid, state=job.state,
        attempts=job.attempts, reason=public_reason(job.reason),
        created_at=_iso(job.created_at) or "",
        started_at=_iso(job.started_at), finished_at=_iso(job.finished_at), staging=staging,
        progress=progress)


@router.get("/jobs/{job_id}", response_model=JobStatus)
def read(job_id: str, request: Request, session: DbSession,
         hub: HubCaller) -> JobStatus:
    job, _ = _job_for(request, session, job_id, hub, "read")
    return status_of(job, request.app.state.node.node_id,
                     getattr(request.app.state, "job_work_dir", None))


@router.post("/jobs/{job_id}/cancel", response_model=JobStatus)
def cancel(job_id: str, request: Request, session: DbSession,
           hub: HubCaller) -> JobStatus:
    ctx = request.app.state.ctx
    job, hub_ctx = _job_for(request, session, job_id, hub, "cancel")
    if job.state in FINAL:
        _audit_own(request, actor=hub_ctx.sub, action="job.cancel", object=f"job:{job_id}",
                   decision="deny", reason=f"the job is already {job.state}")
        raise Conflict(f"the job is already {job.state}")
    was = job.state
    if not repo.cancel_job(session, job_id, reason=f"cancelled by {hub_ctx.sub}"):
        raise Conflict("the job ended meanwhile")
    ctx.audit.record(session, actor=hub_ctx.sub, action="job.cancel", object=f"job:{job_id}",
                     decision="allow", reason=f"cancelled while {was}",
                     details={"permit": job.pid})
    job = repo.get(session, job_id)
    assert job is not None
    return status_of(job, request.app.state.node.node_id,
                     getattr(request.app.state, "job_work_dir", None))


def collect_outputs(job: NodeJob, output_dir: Path, rules: OutputRules, *,
                    log_only: bool = False) -> JobOutputs:
    """The worker's report merged with a fresh check, and the bytes of what is not
    blocked, each read without following links. `log_only` (a job that failed): the log
    alone, the other entries neither sent nor named (the report-wide reasons still hold)."""
    fresh = check_outputs(output_dir, rules=rules)
    earlier = {f.get("path"): f for f in ((job.result or {}).get("airlock") or {})
               .get("files") or []}
    if log_only:
        fresh.files = [f for f in fresh.files if f.path == LOG_NAME]
        earlier = {p: f for p, f in earlier.items() if p == LOG_NAME}
    reasons = list(dict.fromkeys(
        list(((job.result or {}).get("airlock") or {}).get("reasons") or [])
        + fresh.reasons))
    files = []
    for entry in fresh.files:
        before = earlier.get(entry.path)
        if before is None:
            entry.flag("blocked", "not among the outputs the job ended with")
        else:
            for reason in before.get("reasons") or []:
                if reason not in entry.reasons:
                    entry.reasons.append(reason)
            entry.places += [place for p in places_from(before.get("places"))
                              if (place := Place(**p)) not in entry.places]
            entry.verdict = worst(entry.verdict, before.get("verdict") or "blocked")
        if entry.verdict == "blocked" or entry.path.endswith("/"):
            continue
        try:
            data = read_regular(output_dir, entry.path, rules.max_file_bytes)
        except (OSError, NotCopied) as exc:
            entry.flag("blocked", f"could not be read: {exc}")
            continue
        files.append(OutputFile(path=entry.path, sha256=hashlib.sha256(data).hexdigest(),
                                data=base64.b64encode(data).decode()))
    missing = sorted(set(earlier) - {f.path for f in fresh.files})
    if missing:
        reasons.append("outputs missing since the job ended: " + ", ".join(missing[:10]))
    fresh.reasons = reasons
    fresh.finish()
    if fresh.reasons:
        fresh.verdict = "blocked"
    return JobOutputs(job_id=job.id, node_id="", pid=job.pid, user_id=job.user_id,
                      # a failed part's log is no outputs: no verdict ("none")
                      verdict=NO_VERDICT if log_only else fresh.shown_verdict(),
                      reasons=fresh.reasons,
                      report=[f.model_dump(mode="json") for f in fresh.files],
                      files=files)


@router.get("/jobs/{job_id}/outputs", response_model=JobOutputs)
def outputs(job_id: str, request: Request, session: DbSession,
            hub: HubCaller) -> JobOutputs:
    ctx = request.app.state.ctx
    node_id = request.app.state.node.node_id
    job, hub_ctx = _job_for(request, session, job_id, hub, "collect")
    has_log = bool((job.result or {}).get("log"))  # it ran (a failure at staging: none)
    if job.state not in RAN or (job.state != SUCCEEDED and not has_log):
        _audit_own(request, actor=hub_ctx.sub, action="job.outputs", object=f"job:{job_id}",
                   decision="deny", reason=f"the job is {job.state}")
        raise NoOutputs(f"the job is {job.state}; only a succeeded job's outputs, or a "
                        "failed job's log, go to the airlock")
    work_dir = getattr(request.app.state, "job_work_dir", None)
    try:
        rules = rules_from_policy(ctx.policy)
    except AirlockPolicyError as exc:
        _audit_own(request, actor=hub_ctx.sub, action="job.outputs", object=f"job:{job_id}",
                   decision="deny", reason=str(exc))
        raise Forbidden(f"no output rules: {exc}") from None
    if work_dir is None:
        raise Conflict("this node keeps no job outputs")
    answer = collect_outputs(job, Path(work_dir) / job.id / "output", rules,
                             log_only=job.state != SUCCEEDED)
    answer.node_id = node_id
    ctx.audit.record(session, actor=hub_ctx.sub, action="job.outputs", object=f"job:{job_id}",
                     decision="allow",
                     reason=f"{len(answer.files)} file(s) sent to the central airlock, "
                            f"{sum(f['verdict'] == 'blocked' for f in answer.report)} "
                            "blocked here",
                     details={"permit": job.pid, "verdict": answer.verdict,
                              "files": {f.path: f.sha256 for f in answer.files}})
    return answer
