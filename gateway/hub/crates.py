"""Jobs as Five Safes RO-Crates (spe.crate): a request crate submitted as a job, and a
job's result crate.

`submit`: the crate is unpacked and checked (BagIt checksums, one folder, no links or
escaping names), its permit, entry point, code and nodes read, and the job sent exactly
as `POST /jobs` sends one (the same permit and policy checks, audited); the crate's
identifier is audited beside it.

`result`: only for whom may read the job's outputs (policies/jobs `outputs`); released
files are read through the airlock's own download step (policies/airlock, audited per
file), so the crate never holds more than the researcher could download."""

from __future__ import annotations

import base64

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from gateway.hub import jobs
from gateway.hub.service import Hub
from spe.airlock.review import repository as airlock_requests
from spe.airlock.review.service import Airlock
from spe.audit.models import CentralAuditEntry
from spe.crate import code_store
from spe.crate import request as request_crate
from spe.crate import result as result_crate
from spe.crate.bag import CrateError
from spe.db import session_scope
from spe.identity import Principal
from spe.web import AppContext
from spe.wire.jobs import InvalidJob

#: The most a request crate may weigh, zipped (the code limit, and room for metadata).
MAX_CRATE_BYTES = jobs.MAX_CODE_B64


async def submit(ctx: AppContext, hub: Hub | None, data: bytes, caller: Principal,
                 use_permit) -> jobs.JobView:
    try:
        asked = await run_in_threadpool(request_crate.read, data)
    except CrateError as exc:
        await run_in_threadpool(jobs._audit, ctx, actor=caller.id, action="job.crate",
                                object="crate", decision="deny", reason=str(exc))
        raise InvalidJob(f"the request crate: {exc}") from None
    body = jobs.JobSubmission(permit=asked.permit, code=base64.b64encode(asked.code).decode(),
                              entry=asked.entry, nodes=asked.nodes)
    view = await jobs.submit(ctx, hub, body, caller, use_permit)
    await run_in_threadpool(jobs._audit, ctx, actor=caller.id, action="job.crate",
                            object=f"job:{view.id}", decision="allow",
                            reason=f"submitted as Five Safes RO-Crate {asked.crate_id}")
    return view


async def result(ctx: AppContext, hub: Hub | None, job_id: str, caller: Principal) -> bytes:
    from gateway.hub.collect import collect, pending

    job = await run_in_threadpool(jobs._load, ctx, job_id, caller, "outputs")
    if pending(job) and hub is not None and hub.fanout.nodes:
        await collect(ctx, hub, job)
    airlock = Airlock(policy=ctx.policy, sessions=ctx.sessions, audit=ctx.audit)

    def build() -> bytes:
        with session_scope(ctx.sessions) as session:
            central = jobs.repository.get(session, job_id)
            assert central is not None  # _load found it
            request = airlock_requests.of_job(session, job_id)
            released = []
            if request is not None and request.state == "released":
                for file in sorted(request.files, key=lambda f: f.name):
                    if file.stored:
                        _, data = airlock.download(session, caller, request.id, file.name)
                        released.append(result_crate.Released(file.name, data))
            objects = [f"job:{job_id}"] + ([request.id] if request is not None else [])
            entries = list(session.execute(
                select(CentralAuditEntry)
                .where(CentralAuditEntry.object.in_(objects),
                       CentralAuditEntry.action.in_(list(result_crate.CHECKS)))
                .order_by(CentralAuditEntry.seq)).scalars())
            facts = result_crate.JobFacts(
                id=central.id, permit=central.pid, user=central.user_id,
                entry=central.entry, code_sha256=central.code_sha256,
                created_at=central.created_at, nodes=dict(central.nodes),
                hub=ctx.settings.oidc_issuer)
            crate = result_crate.build(
                facts, code=code_store.load(ctx.settings, central.code_sha256),
                request=request, audit=entries, released=released)
            ctx.audit.record(session, actor=caller.id, action="job.crate.read",
                             object=f"job:{job_id}", decision="allow",
                             reason=f"result crate with {len(released)} released file(s) "
                                    f"and {len(entries)} audited check(s)")
            return crate

    return await run_in_threadpool(build)


__all__ = ["MAX_CRATE_BYTES", "result", "submit"]
