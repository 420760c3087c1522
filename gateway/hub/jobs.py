"""Jobs under a data permit, sent by the hub to the nodes and followed there.

`submit`: the caller must be allowed to use the permit now (`Permits.authorize_use`:
a member, an active permit; audited), the target nodes must be institutions of the permit
(default: all of them); the job then goes to each target node at once over mutual TLS,
with a context the hub signs per node whose `qh` is the SHA-256 of the code. Each node
decides for itself (policies/jobs on its own copy of the permit) and queues it. The hub
keeps a central record (spe.jobs): who, which permit, each node's job id or refusal.

`status` / `cancel` ask every node holding a part of the job, with a context whose `qh` is
the SHA-256 of that node's job id; the state lives at the nodes only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, model_validator
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from gateway.hub.calls import call_node
from gateway.hub.environments import EnvironmentsUnreadable
from gateway.hub.environments import known as known_environments
from gateway.hub.service import FederationNotConfigured, Hub
from spe.airlock.review import repository as airlock_requests
from spe.airlock.review.schemas import RequestOut, researcher_view
from spe.crate import code_store
from spe.db import session_scope
from spe.errors import Forbidden, NotFound, SPEError, validation_reason
from spe.identity import Principal
from spe.jobs import repository
from spe.jobs.models import CentralJob
from spe.permits import repository as permits_repository
from spe.policy.gate import decide_or_refuse
from spe.sandbox.limits import Limits, RequestedLimits
from spe.web import AppContext
from spe.wire.code_archive import CodeArchiveError, pack_script
from spe.wire.jobs import (
    DEFAULT_ENVIRONMENT,
    ENVIRONMENT_PATTERN,
    JOBS_PATH,
    MAX_ARCHIVE_BYTES,
    MAX_CODE_B64,
    MAX_ENTRY_CHARS,
    CodeTooLarge,
    InvalidJob,
    JobRefused,
    JobStatus,
    StagingProgress,
    StagingSummary,
    decode_code,
    public_reason,
)

ACCESS_POLICY = "jobs/access"  # who reads and cancels a job
#: Sending the code can take longer than answering a query.
MIN_SUBMIT_TIMEOUT = 30.0
MAX_SCRIPT_CHARS = 1024 * 1024


class JobSubmission(BaseModel):
    permit: str = Field(min_length=1, max_length=32)
    # base64 of a tar.gz of the code folder (`spe job submit` packs one), checked against
    # the one limit the nodes apply too (a 413, spe.wire.jobs), or ...
    code: Annotated[str, Field(min_length=4, json_schema_extra={"maxLength": MAX_CODE_B64})
                    ] | None = None
    # ... the Python source of the entry point alone (the web page sends this).
    script: str | None = Field(default=None, min_length=1, max_length=MAX_SCRIPT_CHARS)
    entry: str = Field(default="main.py", min_length=1, max_length=MAX_ENTRY_CHARS)
    limits: RequestedLimits = Field(default_factory=dict)
    nodes: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None,
                                                                     max_length=100)
    # The analysis environment the code runs in: one the hub lists (GET
    # /api/v1/environments), which each node's policy then allows or refuses.
    environment: str = Field(default=DEFAULT_ENVIRONMENT, pattern=ENVIRONMENT_PATTERN,
                             max_length=32)

    @model_validator(mode="after")
    def _one_kind_of_code(self) -> JobSubmission:
        if (self.code is None) == (self.script is None):
            raise ValueError("give either code (a base64 tar.gz) or script (Python source)")
        return self

    def packed(self) -> bytes:
        if self.script is not None:
            try:
                packed = pack_script(self.script, self.entry)
            except CodeArchiveError as exc:
                raise InvalidJob(f"entry: {exc}") from None
            if len(packed) > MAX_ARCHIVE_BYTES:
                raise CodeTooLarge("the packed script is over the code limit")
            return packed
        return decode_code(self.code or "")


class NodeJobView(BaseModel):
    node_id: str
    job_id: str | None = None  # the node's job id; None when it refused the job
    submitted: str  # "queued", or why the node did not take it
    # "queued" | "staging" | "running" | "succeeded" | ... (the node's state), or what
    # kept the hub from learning it: "refused", "unreachable", "error", "not submitted".
    state: str
    reason: str = ""  # the node's runner's words (spe.wire.jobs), or why the hub knows none
    attempts: int = 0
    staging: StagingSummary | None = None
    progress: StagingProgress | None = None  # while it stages: the step and percent
    # When the node's worker started and ended it (the node's words, when it was asked).
    started_at: str | None = None
    finished_at: str | None = None
    # The central airlock's request for this part's outputs, once collected; `outputs`
    # says what became of them ("collected", "no outputs: the job failed", ...).
    airlock: str | None = None
    outputs: str | None = None


class JobView(BaseModel):
    id: str
    permit: str
    user: str
    code_sha256: str
    entry: str
    limits: dict[str, Any]
    environment: str = DEFAULT_ENVIRONMENT
    created_at: datetime
    nodes: list[NodeJobView]


def _audit(ctx: AppContext, **entry: Any) -> None:
    with session_scope(ctx.sessions) as session:
        ctx.audit.record(session, **entry)


def _view(job: CentralJob, states: dict[str, dict[str, Any]] | None = None) -> JobView:
    nodes = []
    for node_id, sent in sorted(job.nodes.items()):
        # A part collected into the airlock keeps its final state; others are "queued"
        # until a node says more.
        fields: dict[str, Any] = (
            {"state": sent.get("state") or "queued"} if sent.get("job_id")
            else {"state": "not submitted", "reason": sent.get("outcome", "")})
        if states and node_id in states:
            fields.update(states[node_id])
        nodes.append(NodeJobView(node_id=node_id, job_id=sent.get("job_id"),
                                 submitted=sent.get("outcome", ""),
                                 airlock=sent.get("airlock"), outputs=sent.get("outputs"),
                                 **fields))
    return JobView(id=job.id, permit=job.pid, user=job.user_id, code_sha256=job.code_sha256,
                   entry=job.entry, limits=job.limits,
                   environment=job.environment or DEFAULT_ENVIRONMENT,
                   created_at=job.created_at, nodes=nodes)


def _hub(hub: Hub | None) -> Hub:
    if hub is None or not hub.fanout.nodes:
        raise FederationNotConfigured("the hub has no nodes (SPE_FEDERATION_NODES) or no "
                                      "PKI (SPE_PKI_DIR)")
    return hub


async def submit(ctx: AppContext, hub: Hub | None, body: JobSubmission, caller: Principal,
                 use_permit: Callable[[str], list[str]],
                 on_record: Callable[[Session, CentralJob], None] | None = None) -> JobView:
    """`use_permit(pid)` raises unless the caller may use the permit now, else returns the
    permit's institutions (node ids). `on_record(session, job)` adds what a caller keeps
    beside the job (the TES API's task) in the job's own transaction."""
    code = body.packed()
    digest = hashlib.sha256(code).hexdigest()
    institutions = await run_in_threadpool(use_permit, body.permit)
    targets = sorted(set(body.nodes)) if body.nodes else sorted(institutions)
    outside = [n for n in targets if n not in institutions]
    if outside or not targets:
        reason = (f"not an institution of permit {body.permit}: {', '.join(outside)}"
                  if outside else f"permit {body.permit} covers no institution")
        await run_in_threadpool(_audit, ctx, actor=caller.id, action="job.submit",
                                object=f"code:{digest}", decision="deny", reason=reason,
                                details={"permit": body.permit, "nodes": targets})
        raise JobRefused(reason)
    try:  # limits no node would take are refused here, once, naming the field
        Limits(**body.limits)
    except ValidationError as exc:
        raise InvalidJob(f"limits are not valid: {validation_reason(exc.errors())}") from None
    await run_in_threadpool(known_environment, ctx, body.environment, caller, digest)
    hub = _hub(hub)
    payload = {"code": base64.b64encode(code).decode(), "entry": body.entry,
               "limits": body.limits, "environment": body.environment}
    timeout = max(hub.fanout.timeout, MIN_SUBMIT_TIMEOUT)

    async def one(node_id: str) -> tuple[str, dict[str, Any]]:
        context = hub.signer.sign(user=caller.id, roles=list(caller.roles), tier="permit",
                                  query_hash=digest, node_id=node_id, permit=body.permit)
        status, answer = await call_node(hub, node_id, "POST", JOBS_PATH, context,
                                     json=payload, timeout=timeout)
        if status == 202 and isinstance(answer, dict) and answer.get("job_id"):
            return node_id, {"job_id": str(answer["job_id"]), "outcome": "queued"}
        if status == 0:
            return node_id, {"job_id": None, "outcome": str(answer)}
        return node_id, {"job_id": None, "outcome": f"refused: HTTP {status}: {answer}"}

    sent = dict(await asyncio.gather(*(one(n) for n in targets)))
    accepted = [n for n, s in sent.items() if s["job_id"]]
    if accepted:  # the code that ran goes into the job's result crate (spe.crate)
        await run_in_threadpool(code_store.keep, ctx.settings, code)

    def record() -> JobView:
        with session_scope(ctx.sessions) as session:
            job = None
            if accepted:
                job = repository.add(session, pid=body.permit, user_id=caller.id,
                                     code_sha256=digest, entry=body.entry,
                                     limits=body.limits, nodes=sent,
                                     environment=body.environment)
                if on_record is not None:
                    on_record(session, job)
            ctx.audit.record(
                session, actor=caller.id, action="job.submit",
                object=f"job:{job.id}" if job else f"code:{digest}",
                decision="allow" if job else "deny",
                reason=("sent to " + ", ".join(accepted)) if job
                else "no node accepted the job",
                details={"permit": body.permit, "code_sha256": digest, "entry": body.entry,
                         "limits": body.limits, "environment": body.environment,
                         "nodes": sent})
            if job is None:
                return None  # type: ignore[return-value]
            return _view(job)

    view = await run_in_threadpool(record)
    if view is None:
        raise JobRefused("no node accepted the job: " + refusals_in_words(sent))
    return view


def known_environment(ctx: AppContext, name: str, caller: Principal, digest: str) -> None:
    """Refuse (422, audited) a job naming an environment the hub does not list: no node
    would run it, and the researcher learns which names there are. Whether a node runs a
    listed one is its own policy's answer."""
    error: SPEError
    try:
        listed = known_environments(ctx.settings)
    except EnvironmentsUnreadable as exc:  # fail closed: no job when the list is unread
        error = exc
    else:
        if name in listed:
            return
        error = InvalidJob(f"unknown analysis environment {name!r}; known: "
                           f"{', '.join(sorted(listed)) or 'none'}")
    _audit(ctx, actor=caller.id, action="job.submit", object=f"code:{digest}",
           decision="deny", reason=error.detail, details={"environment": name})
    raise error


_NODE_STATUS = re.compile(r"^refused: HTTP \d{3}: ")


def refusals_in_words(sent: dict[str, dict[str, Any]]) -> str:
    """The nodes' refusals, each reason once with the nodes that gave it:
    "site-a, site-b: limits are not valid: memory_mb: must be at least 64"."""
    by_reason: dict[str, list[str]] = {}
    for node_id, s in sorted(sent.items()):
        reason = _NODE_STATUS.sub("", str(s.get("outcome", ""))) or "no reason given"
        by_reason.setdefault(reason, []).append(node_id)
    return "; ".join(f"{', '.join(nodes)}: {reason}" for reason, nodes in by_reason.items())


def _load(ctx: AppContext, job_id: str, caller: Principal, action: str = "read"
          ) -> CentralJob:
    """The job, if the caller may `action` ("read", "cancel" or "outputs") it
    (policies/jobs `access`, as the nodes decide it too; for "outputs", whether the
    caller is a member of the job's permit is part of the question)."""
    with session_scope(ctx.sessions) as session:
        job = repository.get(session, job_id)
        member = False
        if job is not None:
            if action == "outputs":
                permit = permits_repository.get(session, job.pid)
                member = permit is not None and caller.id in {
                    m.user_id for m in permit.members}
            session.expunge(job)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    decide_or_refuse(ctx.policy, ACCESS_POLICY, {
        "action": action, "subject": {"id": caller.id, "roles": list(caller.roles)},
        "job": {"user_id": job.user_id, "pid": job.pid}, "permit": None,
        "member": member},
        audit=ctx.audit, sessions=ctx.sessions, session=None, actor=caller.id,
        action=f"job.{action}", object=f"job:{job_id}",
        refuse=lambda d: Forbidden(d.reason.removeprefix("denied: ")))
    return job


async def _each_node(hub: Hub, job: CentralJob, caller: Principal, method: str,
                     suffix: str) -> dict[str, dict[str, Any]]:
    async def one(node_id: str, node_job: str) -> tuple[str, dict[str, Any]]:
        context = hub.signer.sign(
            user=caller.id, roles=list(caller.roles), tier="permit",
            query_hash=hashlib.sha256(node_job.encode()).hexdigest(), node_id=node_id,
            permit=job.pid)
        status, answer = await call_node(hub, node_id, method, f"{JOBS_PATH}/{node_job}{suffix}",
                                     context)
        if status == 200:
            try:  # only what the contract lets a researcher read, whatever the node sent
                told = JobStatus.model_validate(answer)
            except ValidationError:
                return node_id, {"state": "error",
                                 "reason": "the node's answer is not a job status"}
            told.reason = public_reason(told.reason)  # what a node says, checked again
            return node_id, told.model_dump(include={"state", "reason", "attempts",
                                                     "staging", "progress", "started_at",
                                                     "finished_at"})
        if status == 0:
            return node_id, {"state": "unreachable", "reason": str(answer)}
        state = "refused" if status in (401, 403, 404, 409) else "error"
        return node_id, {"state": state, "reason": f"HTTP {status}: {answer}"}

    return dict(await asyncio.gather(*(one(n, s["job_id"]) for n, s in job.nodes.items()
                                       if s.get("job_id"))))


async def status(ctx: AppContext, hub: Hub | None, job_id: str, caller: Principal
                 ) -> JobView:
    """Every node's state; parts that have ended are collected into the airlock now."""
    from gateway.hub.collect import collect, pending  # collect calls the nodes like this

    job = await run_in_threadpool(_load, ctx, job_id, caller)
    hub = _hub(hub)
    states = await _each_node(hub, job, caller, "GET", "")
    if pending(job) and await collect(ctx, hub, job, states):
        job = await run_in_threadpool(_load, ctx, job_id, caller)
    return _view(job, states)


#: The most jobs whose unfinished parts a list asks the nodes about (the newest first).
LIST_ASKS = 20


async def mine(ctx: AppContext, hub: Hub | None, caller: Principal) -> list[JobView]:
    """The caller's jobs, newest first, each part in its real state: a collected part's
    final state as the hub recorded it; the nodes asked for the others (of the newest
    `LIST_ASKS` jobs; older unfinished parts show "queued" until their job is read)."""
    from gateway.hub.collect import pending

    def load() -> list[CentralJob]:
        with session_scope(ctx.sessions) as session:
            jobs = list(repository.of_user(session, caller.id))
            for job in jobs:
                session.expunge(job)
            return jobs

    jobs = await run_in_threadpool(load)
    asked = [j for j in jobs if pending(j)][:LIST_ASKS]
    states: dict[str, dict[str, dict[str, Any]]] = {}
    if asked and hub is not None and hub.fanout.nodes:
        answers = await asyncio.gather(*(_each_node(hub, j, caller, "GET", "")
                                         for j in asked))
        states = {j.id: a for j, a in zip(asked, answers, strict=True)}
    return [_view(job, {n: s for n, s in states.get(job.id, {}).items()
                        if n in pending(job)}) for job in jobs]


async def outputs(ctx: AppContext, hub: Hub | None, job_id: str, caller: Principal
                  ) -> list[RequestOut]:
    """The airlock request of the job's outputs, a section per site collected so far (a
    list: jobs collected before one request per job have one request per site). The
    job's user, an output checker, or any member of the job's permit (who may download
    what is released, policies/airlock); parts that have ended are collected first (the
    hub asks the nodes as the airlock's collector, not as the caller)."""
    from gateway.hub.collect import collect, pending

    job = await run_in_threadpool(_load, ctx, job_id, caller, "outputs")
    if pending(job) and hub is not None and hub.fanout.nodes:
        await collect(ctx, hub, job)

    def read() -> list[RequestOut]:
        with session_scope(ctx.sessions) as session:
            found = airlock_requests.list_for(session, job_id=job_id)
            ctx.audit.record(session, actor=caller.id, action="job.outputs.read",
                             object=f"job:{job_id}", decision="allow",
                             reason=f"{len(found)} airlock request(s)")
            return [researcher_view(r, caller) for r in found]

    return await run_in_threadpool(read)


async def cancel(ctx: AppContext, hub: Hub | None, job_id: str, caller: Principal
                 ) -> JobView:
    job = await run_in_threadpool(_load, ctx, job_id, caller, "cancel")
    hub = _hub(hub)
    outcomes = await _each_node(hub, job, caller, "POST", "/cancel")
    await run_in_threadpool(
        _audit, ctx, actor=caller.id, action="job.cancel", object=f"job:{job_id}",
        decision="allow", reason="cancel sent to the nodes",
        details={"permit": job.pid,
                 "nodes": {n: f"{o.get('state')}: {o.get('reason', '')}".rstrip(": ")
                           for n, o in outcomes.items()}})
    # A node that had already finished says so (409): show its current state instead.
    finished = {n for n, o in outcomes.items() if o.get("state") == "refused"
                and "already" in str(o.get("reason"))}
    if finished:
        outcomes.update({n: o for n, o in (await _each_node(hub, job, caller, "GET", ""))
                         .items() if n in finished})
    return _view(job, outcomes)


__all__ = ["JobSubmission", "JobView", "cancel", "mine", "outputs", "status", "submit"]
