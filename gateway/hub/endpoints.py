"""The hub's federated query API (statistics tier for registered researchers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi import Query as QueryParam

from gateway.hub import code_reviews, crates, environments, jobs, service
from gateway.hub.schemas import FederatedAnswer
from spe.airlock.review.schemas import RequestOut
from spe.db import session_scope
from spe.identity import Principal
from spe.permits.service import Permits, institutions_of
from spe.web import Caller
from spe.web.responses import refusals
from spe.wire.code_review import (
    CodeDecision,
    CodeReviewDetail,
    CodeReviewSummary,
    DecisionOutcome,
)
from spe.wire.jobs import TOO_LARGE_RESPONSE
from spe.wire.query import Query

# 404: the permit named; 503: no federation configured.
router = APIRouter(prefix="/api/v1", tags=["federated query"], responses=refusals(404, 503))


@router.post("/query", response_model=FederatedAnswer)
async def federated_query(
    query: Query, caller: Caller, request: Request,
    permit: Annotated[str | None, QueryParam(
        max_length=32, description="ask in the permit tier, under this permit")] = None,
) -> FederatedAnswer:
    """Ask every node; each answers under its own policy and disclosure control. The
    answer lists every node with its status and time, and the combined counts."""
    ctx = request.app.state.ctx

    def use_permit(pid: str) -> None:
        permits = Permits(policy=ctx.policy, sessions=ctx.sessions, audit=ctx.audit,
                          holder=request.app.state.dataset_holder)
        with session_scope(ctx.sessions) as session:
            permits.authorize_use(session, caller, pid)

    return await service.federated_query(ctx, request.app.state.hub, query, caller,
                                         permit=permit, use_permit=use_permit)


# --- the analysis environments a job may name (gateway/hub/environments.py) -------------

@router.get("/environments", response_model=list[environments.EnvironmentOut],
            tags=["jobs"])
def analysis_environments(caller: Caller, request: Request
                          ) -> list[environments.EnvironmentOut]:
    """Every analysis environment a job may name (`"environment"`), with its description,
    Python version and every package pinned, as its requirements file states them. Each
    institution's policy decides which of them it runs."""
    return environments.listing(request.app.state.ctx.settings)


# --- jobs under a data permit (gateway/hub/jobs.py) --------------------------------------

@router.post("/jobs", response_model=jobs.JobView, status_code=202, tags=["jobs"],
             responses=TOO_LARGE_RESPONSE,
             max_body_size=jobs.MAX_CODE_B64 + 1024 * 1024)  # the code, and room for the rest
async def submit_job(body: jobs.JobSubmission, caller: Caller,
                     request: Request) -> jobs.JobView:
    """Send a job (a tar.gz of code, base64) under a permit to the permit's institutions
    (or some of them); each node decides on its own copy of the permit and queues it."""
    return await jobs.submit(request.app.state.ctx, request.app.state.hub, body, caller,
                             permit_user(request, caller))


def permit_user(request: Request, caller: Principal) -> Callable[[str], list[str]]:
    """What `jobs.submit` asks of a permit: raises unless `caller` may use it now
    (`Permits.authorize_use`, audited), else gives its institutions."""
    ctx = request.app.state.ctx

    def use_permit(pid: str) -> list[str]:
        permits = Permits(policy=ctx.policy, sessions=ctx.sessions, audit=ctx.audit,
                          holder=request.app.state.dataset_holder)
        with session_scope(ctx.sessions) as session:
            return institutions_of(permits.authorize_use(session, caller, pid))

    return use_permit


@router.post("/jobs/crate", response_model=jobs.JobView, status_code=202, tags=["jobs"],
             responses={**TOO_LARGE_RESPONSE, **refusals(422)},
             max_body_size=crates.MAX_CRATE_BYTES,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/zip": {"schema": {"type": "string", "format": "binary",
                                                "maxLength": crates.MAX_CRATE_BYTES}}}}})
async def submit_crate(caller: Caller, request: Request) -> jobs.JobView:
    """Send a job given as a Five Safes RO-Crate (a zipped BagIt bag: README, "Five Safes
    RO-Crates"): its permit, code, entry point and nodes come from the crate."""
    return await crates.submit(request.app.state.ctx, request.app.state.hub,
                               await request.body(), caller, permit_user(request, caller))


@router.get("/jobs/{job_id}/crate", tags=["jobs"], response_class=Response,
            responses={200: {"content": {"application/zip": {}},
                             "description": "the result crate, a zipped BagIt bag"}})
async def job_crate(job_id: str, caller: Caller, request: Request) -> Response:
    """The job's result as a Five Safes RO-Crate: its code, permit, every check and review
    the audit log holds for it, and (once released) its released outputs."""
    data = await crates.result(request.app.state.ctx, request.app.state.hub, job_id,
                               caller)
    return Response(data, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="job-{job_id}.crate.zip"',
        "Cache-Control": "no-store"})


@router.get("/jobs", response_model=list[jobs.JobView], tags=["jobs"])
async def my_jobs(caller: Caller, request: Request) -> list[jobs.JobView]:
    """The caller's jobs, newest first, with each institution's state (a finished part's
    as recorded, the nodes asked for the others)."""
    return await jobs.mine(request.app.state.ctx, request.app.state.hub, caller)


@router.get("/jobs/{job_id}/outputs", response_model=list[RequestOut], tags=["jobs"])
async def job_outputs(job_id: str, caller: Caller, request: Request) -> list[RequestOut]:
    """The job's airlock request (a list of one; jobs collected before one request per
    job list one per site): a section per site, reviews, and whether it is released; a
    closed request (every file blocked) lists each file with the rules that blocked it."""
    return await jobs.outputs(request.app.state.ctx, request.app.state.hub, job_id, caller)


@router.get("/jobs/{job_id}", response_model=jobs.JobView, tags=["jobs"])
async def job_status(job_id: str, caller: Caller, request: Request) -> jobs.JobView:
    """The job's state at every node: state, reason, log tail, airlock verdicts."""
    return await jobs.status(request.app.state.ctx, request.app.state.hub, job_id, caller)


@router.post("/jobs/{job_id}/cancel", response_model=jobs.JobView, tags=["jobs"])
async def cancel_job(job_id: str, caller: Caller, request: Request) -> jobs.JobView:
    """Cancel the job at every node (a running one is killed at its next heartbeat)."""
    return await jobs.cancel(request.app.state.ctx, request.app.state.hub, job_id, caller)


# --- institutions vetting job code (gateway/hub/code_reviews.py) --------------------------

NodeId = Annotated[str, PathParam(min_length=1, max_length=64)]
Pid = Annotated[str, PathParam(min_length=1, max_length=32)]
Sha256 = Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$", min_length=64, max_length=64)]


@router.get("/code-reviews", response_model=list[CodeReviewSummary], tags=["code review"],
            responses=refusals(403))
async def code_awaiting_review(caller: Caller, request: Request) -> list[CodeReviewSummary]:
    """The job code awaiting review by the caller's institution (an approver's), per
    permit and code (SHA-256), with the held jobs and who sent them."""
    return await code_reviews.awaiting(request.app.state.ctx, request.app.state.hub, caller)


@router.get("/code-reviews/{node_id}/{pid}/{sha256}", response_model=CodeReviewDetail,
            tags=["code review"], responses=refusals(403, 409))
async def code_for_review(node_id: NodeId, pid: Pid, sha256: Sha256, caller: Caller,
                          request: Request) -> CodeReviewDetail:
    """One code at the institution: its files, a unified diff against the version of the
    permit approved last there, the researchers, and the permit's decisions so far."""
    return await code_reviews.read(request.app.state.ctx, request.app.state.hub, caller,
                                   node_id, pid, sha256)


@router.post("/code-reviews/{node_id}/{pid}/{sha256}", response_model=DecisionOutcome,
             tags=["code review"], responses=refusals(403, 409))
async def decide_code(node_id: NodeId, pid: Pid, sha256: Sha256, body: CodeDecision,
                      caller: Caller, request: Request) -> DecisionOutcome:
    """Approve (the held jobs of the permit with this code run, and so will later ones) or
    reject (they fail with the reason) the code for the permit at the institution."""
    return await code_reviews.decide(request.app.state.ctx, request.app.state.hub, caller,
                                     node_id, pid, sha256, body)
