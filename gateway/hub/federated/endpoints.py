"""The hub's API for federated runs (gateway/hub/federated/runs.py):
`POST /api/v1/fed/runs` starts one under a permit (202), `GET /api/v1/fed/runs` lists the
caller's, `GET /api/v1/fed/runs/{id}` shows its rounds, each node's state per round (the
gate's words), the pooled metrics and the privacy spent, `POST .../cancel` stops it, and
`GET .../outputs` is its airlock request once its result was sent there."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from gateway.hub.federated import runs
from gateway.hub.federated.apps import APPS
from gateway.hub.federated.schemas import FedRunSubmission, FedRunView
from spe.airlock.review import repository as airlock_requests
from spe.airlock.review.schemas import RequestOut, researcher_view
from spe.db import session_scope
from spe.permits.service import Permits, institutions_of
from spe.web import Caller
from spe.web.responses import refusals
from spe.wire.jobs import MAX_CODE_B64, TOO_LARGE_RESPONSE

router = APIRouter(prefix="/api/v1/fed", tags=["federated runs"],
                   responses=refusals(403, 404, 503))


@router.post("/runs", response_model=FedRunView, status_code=202,
             responses=TOO_LARGE_RESPONSE, max_body_size=MAX_CODE_B64 + 1024 * 1024)
async def start_run(body: FedRunSubmission, caller: Caller, request: Request) -> FedRunView:
    """Start a ComBat harmonisation or a Flower app over the permit's institutions (or
    some of them), in rounds; every update passes each node's gate and goes to the hub's
    aggregator only; the final result goes to the airlock."""
    ctx = request.app.state.ctx

    def use_permit(pid: str) -> list[str]:
        permits = Permits(policy=ctx.policy, sessions=ctx.sessions, audit=ctx.audit,
                          holder=request.app.state.dataset_holder)
        with session_scope(ctx.sessions) as session:
            return institutions_of(permits.authorize_use(session, caller, pid))

    return await runs.start(ctx, request.app.state.hub, body, caller, use_permit,
                            APPS[body.app])


@router.get("/runs", response_model=list[FedRunView])
async def my_runs(caller: Caller, request: Request) -> list[FedRunView]:
    """The caller's runs, newest first."""
    return await run_in_threadpool(runs.mine, request.app.state.ctx, caller)


@router.get("/runs/{run_id}", response_model=FedRunView)
async def run_status(run_id: str, caller: Caller, request: Request) -> FedRunView:
    """The run's rounds so far: each node's state in each, the pooled metrics, the
    privacy spent per node. Its user, an output checker or an admin."""
    run = await run_in_threadpool(runs.load, request.app.state.ctx, run_id, caller)
    return runs.view(run)


@router.post("/runs/{run_id}/cancel", response_model=FedRunView)
async def cancel_run(run_id: str, caller: Caller, request: Request) -> FedRunView:
    """Stop the run after the round under way; its user only."""
    return await runs.cancel(request.app.state.ctx, run_id, caller)


@router.get("/runs/{run_id}/outputs", response_model=list[RequestOut])
async def run_outputs(run_id: str, caller: Caller, request: Request) -> list[RequestOut]:
    """The airlock request of the run's result (empty until the run has finished)."""
    ctx = request.app.state.ctx
    await run_in_threadpool(runs.load, ctx, run_id, caller)

    def read() -> list[RequestOut]:
        with session_scope(ctx.sessions) as session:
            found = airlock_requests.list_for(session, job_id=run_id)
            ctx.audit.record(session, actor=caller.id, action="fed.outputs.read",
                             object=f"fed:{run_id}", decision="allow",
                             reason=f"{len(found)} airlock request(s)")
            return [researcher_view(r, caller) for r in found]

    return await run_in_threadpool(read)
