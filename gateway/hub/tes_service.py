"""The GA4GH TES API's operations (gateway/hub/tes_endpoints.py), each through the hub's
jobs: `create` plans the job (gateway/hub/tes.py) and sends it with `jobs.submit`, keeping
the task's record in the job's transaction; `get`, `cancel` and `list_tasks` read the
jobs with `jobs.status`, `jobs.cancel` and `jobs.mine` (the access policy and the audit
theirs) and show them as tasks. Refusals of a task are audited (`tes.create`, deny).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from gateway.hub import environments, jobs
from gateway.hub.service import Hub
from gateway.hub.tes import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    TesBadRequest,
    plan,
    task_of,
)
from spe.db import session_scope
from spe.errors import NotFound
from spe.identity import Principal
from spe.jobs import repository
from spe.jobs.models import CentralJob, TesTaskRecord
from spe.permits.service import PermitNotFound
from spe.sandbox.limits import Limits
from spe.web import AppContext
from spe.wire.jobs import CodeTooLarge, InvalidJob
from spe.wire.tes import (
    State,
    TesCreateTaskResponse,
    TesListTasksResponse,
    TesOrganization,
    TesServiceInfo,
    TesTask,
    TesTaskIn,
    View,
)


def _audit_refusal(ctx: AppContext, caller: Principal, action: str, reason: str,
                   obj: str = "tes:task") -> None:
    with session_scope(ctx.sessions) as session:
        ctx.audit.record(session, actor=caller.id, action=action, object=obj,
                         decision="deny", reason=reason[:500])


async def create(ctx: AppContext, hub: Hub | None, task: TesTaskIn, caller: Principal,
                 use_permit: Callable[[str], list[str]]) -> TesCreateTaskResponse:
    try:
        submission, kept = plan(task, environments.known(ctx.settings))
    except (TesBadRequest, CodeTooLarge) as exc:
        await run_in_threadpool(_audit_refusal, ctx, caller, "tes.create", exc.detail)
        raise

    def on_record(session: Session, job: CentralJob) -> None:
        # In the job's transaction: no job without its task, nor a task without its job.
        repository.add_tes_task(session, TesTaskRecord(
            job_id=job.id, user_id=caller.id, created_at=job.created_at, **kept))
        ctx.audit.record(session, actor=caller.id, action="tes.create",
                         object=f"job:{job.id}", decision="allow",
                         reason="a GA4GH TES task, sent as this job",
                         details={"name": kept["name"], "tags": kept["tags"],
                                  "environment": kept["environment"],
                                  "inputs": [i["path"] for i in kept["inputs"]]})

    try:
        view = await jobs.submit(ctx, hub, submission, caller, use_permit, on_record)
    except InvalidJob as exc:  # TES says 400 for what the service will not run
        raise TesBadRequest(exc.detail) from None
    except PermitNotFound as exc:
        # A 404 would send py-tes on to its fallback paths, losing the reason.
        raise TesBadRequest(f"tags.permit: {exc.detail}") from None
    return TesCreateTaskResponse(id=view.id)


def _record(ctx: AppContext, task_id: str) -> TesTaskRecord:
    with session_scope(ctx.sessions) as session:
        record = repository.get_tes_task(session, task_id)
        if record is not None:
            session.expunge(record)
    if record is None:
        raise NotFound(f"no TES task {task_id!r} (a job sent otherwise is read at "
                       "/api/v1/jobs)")
    return record


async def get(ctx: AppContext, hub: Hub | None, task_id: str, caller: Principal,
              shown: View) -> TesTask:
    try:  # the jobs' access policy first (audited), then whether it is a TES task
        view = await jobs.status(ctx, hub, task_id, caller)
    except NotFound:
        raise NotFound(f"no task {task_id!r}") from None
    record = await run_in_threadpool(_record, ctx, task_id)
    return task_of(record, view, shown)


async def cancel(ctx: AppContext, hub: Hub | None, task_id: str, caller: Principal
                 ) -> None:
    await run_in_threadpool(_record, ctx, task_id)  # a TES task's, or 404
    try:
        await jobs.cancel(ctx, hub, task_id, caller)
    except NotFound:
        raise NotFound(f"no task {task_id!r}") from None


def _token(record: TesTaskRecord) -> str:
    raw = json.dumps([record.created_at.isoformat(), record.job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(token: str) -> tuple[datetime, str]:
    """The position a page token names (the last task of the page before)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        when, job_id = json.loads(raw)
        return datetime.fromisoformat(when), str(job_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise TesBadRequest("page_token: not one this service gave") from None


def _tagged(tags: dict[str, str], wanted: dict[str, str]) -> bool:
    """The specification's tag filter: every key present; a value, if given, exact."""
    return all(k in tags and (v == "" or tags[k] == v) for k, v in wanted.items())


def _sort_key(record: TesTaskRecord) -> tuple[datetime, str]:
    return _aware(record.created_at), record.job_id


def _aware(when: datetime) -> datetime:
    """SQLite gives back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def list_tasks(ctx: AppContext, hub: Hub | None, caller: Principal, *, shown: View,
                     name_prefix: str | None, state: State | None, tag_key: list[str],
                     tag_value: list[str], page_size: int | None,
                     page_token: str | None) -> TesListTasksResponse:
    """The caller's own tasks (those among their newest jobs, `jobs.mine`), newest
    first, filtered and paged as the specification says."""
    if len(tag_value) > len(tag_key):
        raise TesBadRequest("tag_value: more values than tag_key keys")
    wanted = {k: (tag_value[i] if i < len(tag_value) else "")
              for i, k in enumerate(tag_key)}
    size = DEFAULT_PAGE_SIZE if page_size is None else page_size
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise TesBadRequest(f"page_size: from 1 to {MAX_PAGE_SIZE}")
    after = _after(page_token) if page_token else None

    def load() -> list[TesTaskRecord]:
        with session_scope(ctx.sessions) as session:
            records = repository.tes_tasks_of_user(session, caller.id, name_prefix)
            for record in records:
                session.expunge(record)
            return records

    records = [r for r in await run_in_threadpool(load) if _tagged(r.tags, wanted)]
    if after is not None:
        records = [r for r in records if _sort_key(r) < (_aware(after[0]), after[1])]
    views = {v.id: v for v in await jobs.mine(ctx, hub, caller)}
    tasks: list[TesTask] = []
    last, more = None, False
    for record in records:
        view = views.get(record.job_id)
        if view is None:  # older than the jobs a list reads
            continue
        task = task_of(record, view, shown)
        if state is not None and task.state != state:
            continue
        if len(tasks) == size:  # one more than the page: there is a next page
            more = True
            break
        tasks.append(task)
        last = record
    return TesListTasksResponse(tasks=tasks,
                                next_page_token=_token(last) if more and last else None)


def service_info(base_url: str, environment: str, version: str,
                 names: Collection[str]) -> TesServiceInfo:
    return TesServiceInfo(
        id="eu.ehds.spe.tes", name="EHDS SPE task execution",
        description=("GA4GH TES over the SPE's jobs: a task runs, under the data permit "
                     "its tag `permit` names, in an analysis environment "
                     f"({', '.join(sorted(names))}) at each institution of the "
                     "permit, over its de-identified extract; its outputs go to the "
                     "airlock and are released after two output checkers approve."),
        organization=TesOrganization(name="EHDS secure processing environment",
                                     url=base_url),
        environment=environment, version=version,
        # Nowhere a task may send outputs: they go to the airlock.
        storage=[],
        tesResources_backend_parameters=list(Limits.model_fields),
    )


__all__ = ["cancel", "create", "get", "list_tasks", "service_info"]
