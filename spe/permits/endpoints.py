"""The permit API. Thin: the door (policies/authz) checks the role, `Permits` asks
policies/permits for each step, and issued permits' documents are pushed to the nodes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from spe.db import session_scope
from spe.permits import mail, repository
from spe.permits.schemas import (
    AmendmentIn,
    ApplicationIn,
    ApplicationPatch,
    DecisionIn,
    NotificationOut,
    PermitOut,
    ReviewIn,
)
from spe.permits.service import PermitRefused, Permits, institutions_of, to_out
from spe.web import Caller, DbSession
from spe.web.responses import refusals

router = APIRouter(prefix="/api/v1", tags=["permits"], responses=refusals(400, 404, 409))
Decision = Literal["issue", "refuse", "suspend", "resume", "revoke"]


def permits(request: Request) -> Permits:
    ctx = request.app.state.ctx
    return Permits(policy=ctx.policy, sessions=ctx.sessions, audit=ctx.audit,
                   holder=request.app.state.dataset_holder,
                   on_stopped=request.app.state.permit_stopped)


def mail_after(tasks: BackgroundTasks, request: Request, service: Permits) -> None:
    """Mail what the step notified, after the response (so after the commit)."""
    ctx = request.app.state.ctx
    if ctx.settings.smtp_host and service.notified:
        tasks.add_task(mail.deliver, ctx.settings, ctx.sessions, list(service.notified))


@router.post("/permits", response_model=PermitOut, status_code=201)
def apply(body: ApplicationIn, caller: Caller, session: DbSession,
          request: Request) -> PermitOut:
    """Save a new application as a draft (the applicant may edit it until submitted)."""
    return to_out(permits(request).create(session, caller, body))


@router.get("/permits", response_model=list[PermitOut])
def list_permits(caller: Caller, session: DbSession, request: Request,
                 mine: Annotated[bool, Query(description="only those naming me")] = False,
                 status: Annotated[list[Annotated[str, Field(max_length=32)]] | None,
                                   Query(max_length=12)] = None,
                 ) -> list[PermitOut]:
    """What the caller may read: their own; for an approver, their institution's queue;
    for the access body, every submitted one (policies/permits `view`, item by item)."""
    service = permits(request)
    institution = caller.institution if "approver" in caller.roles and not mine else None
    if mine or not ({"hdab", "admin"} & set(caller.roles) or institution):
        rows = repository.list_for(session, user_id=caller.id, statuses=status)
    else:
        rows = repository.list_for(session, institution=institution, statuses=status)
    visible = []
    for permit in rows:
        try:
            service.check_view(session, caller, permit)
        except PermitRefused:
            continue
        visible.append(to_out(permit))
    return visible


@router.get("/permits/{pid}", response_model=PermitOut)
def show(pid: str, caller: Caller, session: DbSession, request: Request) -> PermitOut:
    service = permits(request)
    permit = service.load(session, pid)
    service.check_view(session, caller, permit, audit_allow=True)
    return to_out(permit)


@router.patch("/permits/{pid}", response_model=PermitOut)
def edit(pid: str, body: ApplicationPatch, caller: Caller, session: DbSession,
         request: Request) -> PermitOut:
    return to_out(permits(request).edit(session, caller, pid, body))


@router.post("/permits/{pid}/submit", response_model=PermitOut)
def submit(pid: str, caller: Caller, session: DbSession, request: Request,
           tasks: BackgroundTasks) -> PermitOut:
    service = permits(request)
    out = to_out(service.submit(session, caller, pid))
    mail_after(tasks, request, service)
    return out


@router.post("/permits/{pid}/reviews", response_model=PermitOut)
def review(pid: str, body: ReviewIn, caller: Caller, session: DbSession,
           request: Request, tasks: BackgroundTasks) -> PermitOut:
    """An approver's review for their institution: approve, reject, or ask for changes."""
    service = permits(request)
    out = to_out(service.review(session, caller, pid, body))
    mail_after(tasks, request, service)
    return out


@router.post("/permits/{pid}/amendments", response_model=PermitOut)
def amend(pid: str, body: AmendmentIn, caller: Caller, session: DbSession, request: Request,
          tasks: BackgroundTasks) -> PermitOut:
    """The applicant asks to add members or datasets; the institutions concerned review
    it, the access body issues it, and the permit stays in force as it was meanwhile."""
    service = permits(request)
    out = to_out(service.amend(session, caller, pid, body))
    mail_after(tasks, request, service)
    return out


@router.post("/permits/{pid}/{action}", response_model=PermitOut)
async def decide(pid: str, action: Decision, body: DecisionIn, caller: Caller,
                 request: Request, tasks: BackgroundTasks) -> PermitOut:
    """The access body issues, refuses, suspends, resumes or revokes. The permit's signed
    document goes to every node holding one of its datasets at once, so their next
    decision already follows it."""
    service = permits(request)
    hub = request.app.state.hub
    key = hub.private_key if hub is not None else None

    def change():
        with session_scope(service.sessions) as session:
            permit = service.decide(session, caller, pid, action, body.reason,
                                    private_key=key)
            return to_out(permit), permit.document, institutions_of(permit)

    out, document, nodes = await run_in_threadpool(change)
    if document and hub is not None:
        out.pushed = await request.app.state.permit_push(nodes, pid, document)
        await run_in_threadpool(_audit_push, service, caller.id, pid, out.pushed)
    mail_after(tasks, request, service)
    return out


def _audit_push(service: Permits, actor: str, pid: str, pushed: dict[str, str]) -> None:
    with session_scope(service.sessions) as session:
        service.audit.record(session, actor=actor, action="permit.push", object=pid,
                             decision="info", reason=", ".join(
                                 f"{n}: {o}" for n, o in sorted(pushed.items())))


@router.get("/notifications", response_model=list[NotificationOut])
def notifications(caller: Caller, session: DbSession) -> list[NotificationOut]:
    """What the caller (or their role at their institution) should act on next."""
    rows = repository.notifications_for(session, caller.id, list(caller.roles),
                                        caller.institution)
    return [NotificationOut(id=n.id, message=n.message, created_at=n.created_at,
                            read_at=n.read_at, permit=pid) for n, pid in rows]
