"""A finished job's outputs, from each node into the central airlock.

For every node part of a job not yet collected, the hub asks the node for the job's state
and, once it succeeded, for its outputs (`GET /api/v1/jobs/{id}/outputs`, signed for the
collector `hub:airlock`, not for any user). The node sends the bytes of what its checks did
not block and the report of everything; the hub writes the files to a private temporary
folder, checks their checksums, and `spe.airlock.review.submit_outputs` checks them again
and stores what passes in the job's one pending request, as that site's section, for the
output checkers. Entries the node blocked are added to the request as blocked, never
stored, with the node's reasons. A site arriving after reviews started voids them. Once
no site is awaited, a request that kept nothing (every file blocked) is closed at once,
its reasons for the researcher (`settle_collected`). A request of a permit that is
suspended or revoked by then is withheld at once.

A part that ran and failed (or timed out) sends its log alone (spe.wire.jobs.LOG_NAME),
reviewed like any output; one that never ran (cancelled, staging refused) is marked as
having no outputs.
Collection runs on every status read and periodically in the central service
(`collect_periodically`); a job part is collected once (the central job row is locked
while its request is recorded).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from gateway.hub.calls import call_node
from gateway.hub.rounds import every
from gateway.hub.service import Hub
from spe.airlock import AirlockPolicyError, rules_from_policy
from spe.airlock.report import places_from, worst
from spe.airlock.review.decisions import AirlockRefused
from spe.airlock.review.models import AirlockFile
from spe.airlock.review.service import settle_collected, submit_outputs
from spe.airlock.review.withhold import withhold_for_permit
from spe.db import session_scope
from spe.jobs.models import CentralJob
from spe.permits import repository as permits
from spe.permits.service import effective_status
from spe.web import AppContext
from spe.wire.jobs import FINAL, JOBS_PATH, RAN, SUCCEEDED
from spe.wire.outputs import COLLECTOR, COLLECTOR_ROLE, JobOutputs

log = logging.getLogger(__name__)

#: Jobs older than this are no longer swept for outputs (a status read still collects).
SWEEP_DAYS = 14


class BadOutputs(ValueError):
    """What a node sent is not a well-formed set of outputs; nothing is stored."""


def pending(job: CentralJob) -> list[str]:
    """The nodes whose part of the job was accepted and not yet collected."""
    return sorted(n for n, sent in job.nodes.items()
                  if sent.get("job_id") and "airlock" not in sent)


async def collect(ctx: AppContext, hub: Hub, job: CentralJob,
                  states: dict[str, dict[str, Any]] | None = None) -> dict[str, str | None]:
    """Collect what is ready; node id -> airlock request id (None: no outputs). `states`
    (node id -> the node's answer) saves asking the nodes again."""
    done: dict[str, str | None] = {}
    for node_id in pending(job):
        if (job.id, node_id) in _collecting:  # a status read and the sweep at once
            continue
        _collecting.add((job.id, node_id))
        try:
            result = await _collect_part(ctx, hub, job, node_id, states)
        finally:
            _collecting.discard((job.id, node_id))
        if result is not _NOT_YET:
            done[node_id] = result
    return done


#: Job parts being collected in this process, so that one is fetched from its node once;
#: `_record`'s row lock keeps it to one request across processes.
_collecting: set[tuple[str, str]] = set()
_NOT_YET = object()


async def _collect_part(ctx: AppContext, hub: Hub, job: CentralJob, node_id: str,
                        states: dict[str, dict[str, Any]] | None) -> Any:
    """The part's request id (None: no outputs), or _NOT_YET."""
    node_job = job.nodes[node_id]["job_id"]
    state = (states or {}).get(node_id, {}).get("state")
    if state is None:
        status, answer = await _collector_call(hub, job, node_id, node_job, "")
        state = answer.get("state") if status == 200 and isinstance(answer, dict) else None
    if state not in FINAL:
        return _NOT_YET
    none = f"no outputs: the job {state}"
    if state not in RAN:
        return await run_in_threadpool(_record, ctx, job.id, node_id, None, none, "", state)
    status, answer = await _collector_call(hub, job, node_id, node_job, "/outputs")
    if status == 409 and state != SUCCEEDED:  # it never ran
        return await run_in_threadpool(_record, ctx, job.id, node_id, None, none, "", state)
    if status != 200:
        log.warning("job %s at %s: outputs not collected: %s %s", job.id, node_id,
                    status, answer)
        return _NOT_YET
    try:
        outputs = JobOutputs.model_validate(answer)
        if outputs.job_id != node_job or outputs.pid != job.pid:
            raise BadOutputs("the outputs are of another job or permit")
    except (ValidationError, BadOutputs) as exc:
        # The researcher reads the outcome: what is wrong may quote a file's name or the
        # node's answer, so that goes to the audit only.
        detail = str(exc).replace("\n", " ")[:500]
        return await run_in_threadpool(_record, ctx, job.id, node_id, None,
                                       "the node's outputs were refused", detail, state)
    return await run_in_threadpool(_record, ctx, job.id, node_id, outputs,
                                   "collected" if state == SUCCEEDED
                                   else f"no outputs: the job {state}; its log collected",
                                   "", state)


async def _collector_call(hub: Hub, job: CentralJob, node_id: str, node_job: str,
                          suffix: str) -> tuple[int, Any]:
    context = hub.signer.sign(user=COLLECTOR, roles=[COLLECTOR_ROLE], tier="permit",
                              query_hash=hashlib.sha256(node_job.encode()).hexdigest(),
                              node_id=node_id, permit=job.pid)
    return await call_node(hub, node_id, "GET", f"{JOBS_PATH}/{node_job}{suffix}", context)


def _unpack(outputs: JobOutputs, folder: Path) -> None:
    """The node's files under `folder`, each path plain and relative, each checksum right."""
    for item in outputs.files:
        parts = item.path.split("/")
        if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
            raise BadOutputs(f"not a plain relative path: {item.path!r}")
        try:
            data = base64.b64decode(item.data, validate=True)
        except (binascii.Error, ValueError):
            raise BadOutputs(f"{item.path}: not base64") from None
        if hashlib.sha256(data).hexdigest() != item.sha256:
            raise BadOutputs(f"{item.path}: the checksum does not match")
        target = folder.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:  # a duplicate path is refused
            out.write(data)


def _merge_node_report(request, outputs: JobOutputs) -> int:
    """The node's verdicts into the central request: the worse of the two for what was
    sent; what the node blocked, as blocked and not stored. Returns how many it blocked."""
    by_path = {f.path: f for f in request.files if f.node_id == outputs.node_id}
    blocked = 0
    for entry in outputs.report:
        path = str(entry.get("path", ""))[:1024]
        verdict = str(entry.get("verdict") or "blocked")
        if verdict not in ("pass", "review", "blocked"):
            verdict = "blocked"
        reasons = [f"at {outputs.node_id}: {r}" for r in entry.get("reasons") or []]
        places = places_from(entry.get("places"))
        mine = by_path.get(path)
        if mine is not None:
            mine.verdict = worst(mine.verdict, verdict)
            mine.reasons = list(dict.fromkeys([*mine.reasons, *reasons]))
            mine.places = [*(mine.places or []), *(p for p in places
                                                   if p not in (mine.places or []))]
            mine.notes = list(dict.fromkeys([*mine.notes, *(entry.get("notes") or [])]))
            if mine.verdict == "blocked" and mine.stored_path:
                Path(mine.stored_path).unlink(missing_ok=True)
                mine.stored, mine.stored_path, mine.sha256 = False, None, None
            continue
        blocked += 1
        request.files.append(AirlockFile(
            node_id=outputs.node_id, path=path, size=int(entry.get("size") or 0), sha256=None,
            kind=str(entry.get("kind") or "unknown")[:32], verdict="blocked",
            reasons=reasons or [f"at {outputs.node_id}: not sent by the node"],
            notes=list(entry.get("notes") or []), places=places, stored=False,
            stored_path=None))
    node_reasons = [f"at {outputs.node_id}: {r}" for r in outputs.reasons]
    request.reasons = list(dict.fromkeys([*request.reasons, *node_reasons]))
    request.sites = [{**s, "reasons": list(dict.fromkeys([*s.get("reasons", []),
                                                          *node_reasons]))}
                     if s.get("node_id") == outputs.node_id else s for s in request.sites]
    return blocked


def _record(ctx: AppContext, job_id: str, node_id: str, outputs: JobOutputs | None,
            outcome: str, detail: str = "", state: str | None = None) -> str | None:
    """Store the outputs as an airlock request (once per job part) and mark the part.
    `outcome` is for the researcher; `detail`, for the audit only; `state`, the part's
    final state at the node, kept so that a list of jobs shows it without asking."""
    settings = ctx.settings
    incoming = None
    try:
        with session_scope(ctx.sessions) as session:
            # Claim the job row before reading it: a no-op write takes its lock (SQLite
            # has no FOR UPDATE, and would start the write transaction only at the first
            # write, after both collectors had seen the part uncollected).
            session.execute(update(CentralJob).where(CentralJob.id == job_id)
                            .values(pid=CentralJob.pid))
            job = session.execute(select(CentralJob).where(CentralJob.id == job_id)
                                  .with_for_update()).scalar_one()
            sent = dict(job.nodes.get(node_id) or {})
            if "airlock" in sent:  # collected meanwhile by another request
                return sent["airlock"]
            request_id = None
            details: dict[str, Any] = {"node": node_id, "node_job": sent.get("job_id"),
                                       "outcome": outcome, "detail": detail}
            awaiting = [n for n in pending(job) if n != node_id]
            if outputs is not None:
                rules = rules_from_policy(ctx.policy)
                storage = settings.resolved_airlock_dir
                storage.mkdir(parents=True, exist_ok=True, mode=0o700)
                incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=storage))
                _unpack(outputs, incoming)
                request = submit_outputs(
                    session, job_id=job.id, node_id=node_id, pid=job.pid,
                    requester=job.user_id, output_dir=incoming, storage_dir=storage,
                    rules=rules, policy=ctx.policy, audit=ctx.audit, awaiting=awaiting)
                details["node_blocked"] = _merge_node_report(request, outputs)
                # What the site sent, in the hub's words: a part that did not succeed sent
                # its log alone, so its section says it has no outputs (and no verdict).
                request.sites = [{**x, "outcome": outcome} if x.get("node_id") == node_id
                                 else x for x in request.sites]
                session.flush()
                request_id = request.id
                details["request"] = request_id
                permit = permits.get(session, job.pid)
                if permit is None or effective_status(permit) in ("suspended", "revoked"):
                    withhold_for_permit(session, job.pid, policy=ctx.policy, audit=ctx.audit)
            sent["airlock"] = request_id
            sent["outputs"] = outcome
            if state in FINAL:
                sent["state"] = state
            job.nodes = {**job.nodes, node_id: sent}
            settled = settle_collected(session, job.id, awaiting, policy=ctx.policy,
                                       audit=ctx.audit)
            if settled is not None and settled.state == "closed":
                details["closed"] = settled.id
            ctx.audit.record(session, actor=COLLECTOR, action="job.outputs",
                             object=f"job:{job.id}",
                             decision="allow" if request_id else "info",
                             reason=outcome, details=details)
            return request_id
    except (BadOutputs, AirlockRefused, AirlockPolicyError) as exc:
        with session_scope(ctx.sessions) as session:
            ctx.audit.record(session, actor=COLLECTOR, action="job.outputs",
                             object=f"job:{job_id}", decision="deny", reason=str(exc),
                             details={"node": node_id})
        if isinstance(exc, AirlockPolicyError):
            raise
        refused = "the airlock refused the outputs" if isinstance(
            exc, AirlockRefused) else "the node's outputs were refused"
        return _record(ctx, job_id, node_id, None, refused, str(exc)[:500], state)
    finally:
        if incoming is not None:
            shutil.rmtree(incoming, ignore_errors=True)


def _open_jobs(ctx: AppContext) -> list[CentralJob]:
    since = datetime.now(UTC) - timedelta(days=SWEEP_DAYS)
    with session_scope(ctx.sessions) as session:
        jobs = list(session.execute(select(CentralJob).where(CentralJob.created_at >= since)
                                    ).scalars())
        for job in jobs:
            session.expunge(job)
    return [job for job in jobs if pending(job)]


async def sweep(ctx: AppContext, hub: Hub) -> int:
    """Collect every recent job's ready outputs; how many parts were collected."""
    collected = 0
    for job in await run_in_threadpool(_open_jobs, ctx):
        collected += len(await collect(ctx, hub, job))
    return collected


async def collect_periodically(ctx: AppContext, hub: Hub, interval: float) -> None:
    await every(interval, lambda: sweep(ctx, hub), "collecting job outputs", log)
