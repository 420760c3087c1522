"""GA4GH TES v1.1 at `/ga4gh/tes/v1` (the mapping onto jobs: gateway/hub/tes.py; the
operations: gateway/hub/tes_service.py).

The task routes pass the door like every API route (a researcher's bearer token; reading
a task is open to output checkers and admins too, as a job is); `service-info` is public,
like the Beacon's. Refusals are `{"error", "detail"}` with TES's statuses: a request the
schema or this service refuses is a 400 with the reason (`tes_errors`), never a 422.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi import Query as QueryParam

from gateway.hub import environments, tes, tes_service
from gateway.hub.endpoints import permit_user
from spe.errors import ErrorShape
from spe.web import Caller
from spe.web.responses import refusals
from spe.wire.jobs import TOO_LARGE_RESPONSE
from spe.wire.tes import (
    MAX_CONTENT_CHARS,
    TES_PREFIX,
    State,
    TesCancelTaskResponse,
    TesCreateTaskResponse,
    TesListTasksResponse,
    TesServiceInfo,
    TesTask,
    TesTaskIn,
    View,
)

#: Under the prefix, a request the schema refuses is TES's 400 (the body stays ours).
tes_errors = ErrorShape(TES_PREFIX, None, None, invalid_status=400)
# 404: no such task or permit; 409: a step out of order; 503: no federation configured.
router = APIRouter(prefix=TES_PREFIX, tags=["GA4GH TES"], responses=refusals(404, 409, 503))
ENVIRONMENT = {"development": "dev", "test": "test", "production": "prod"}
TaskId = Annotated[str, PathParam(min_length=1, max_length=64,
                                  description="The task's id (its job's)")]
ViewParam = Annotated[View, QueryParam(description="MINIMAL: id and state; BASIC: all "
                                       "but input content and system logs; FULL: all")]


@router.get("/service-info", response_model=TesServiceInfo, response_model_exclude_none=True)
def service_info(request: Request) -> TesServiceInfo:
    """GA4GH service-info with TES's fields (public, like the Beacon's description)."""
    settings = request.app.state.ctx.settings
    return tes_service.service_info(str(request.base_url).rstrip("/"),
                            ENVIRONMENT.get(settings.environment, settings.environment),
                            request.app.version, environments.known(settings))


@router.post("/tasks", response_model=TesCreateTaskResponse, responses=TOO_LARGE_RESPONSE,
             max_body_size=2 * tes.MAX_INLINE_CHARS + MAX_CONTENT_CHARS)
async def create_task(body: TesTaskIn, caller: Caller, request: Request
                      ) -> TesCreateTaskResponse:
    """A task as a job under the permit its tag `permit` names (gateway/hub/tes.py says
    what is taken and what is refused)."""
    return await tes_service.create(request.app.state.ctx, request.app.state.hub, body, caller,
                            permit_user(request, caller))


@router.get("/tasks", response_model=TesListTasksResponse, response_model_exclude_none=True)
async def list_tasks(
    caller: Caller, request: Request, view: ViewParam = "MINIMAL",
    name_prefix: Annotated[str | None, QueryParam(max_length=255)] = None,
    state: State | None = None,
    tag_key: Annotated[list[Annotated[str, QueryParam(max_length=128)]] | None,
                       QueryParam(max_length=50)] = None,
    tag_value: Annotated[list[Annotated[str, QueryParam(max_length=1024)]] | None,
                         QueryParam(max_length=50)] = None,
    page_size: Annotated[int | None, QueryParam(ge=1, le=tes.MAX_PAGE_SIZE)] = None,
    page_token: Annotated[str | None, QueryParam(max_length=512)] = None,
) -> TesListTasksResponse:
    """The caller's own tasks, newest first."""
    return await tes_service.list_tasks(
        request.app.state.ctx, request.app.state.hub, caller, shown=view,
        name_prefix=name_prefix, state=state, tag_key=tag_key or [],
        tag_value=tag_value or [], page_size=page_size, page_token=page_token)


@router.get("/tasks/{id}", response_model=TesTask, response_model_exclude_none=True)
async def get_task(id: TaskId, caller: Caller, request: Request,  # noqa: A002 - TES's name
                   view: ViewParam = "MINIMAL") -> TesTask:
    """A task in the view asked for; its state from its parts' at the nodes."""
    return await tes_service.get(request.app.state.ctx, request.app.state.hub, id, caller, view)


@router.post("/tasks/{id}:cancel", response_model=TesCancelTaskResponse)
async def cancel_task(id: TaskId, caller: Caller, request: Request  # noqa: A002
                      ) -> TesCancelTaskResponse:
    """Cancel the task at every institution (the job's cancel)."""
    await tes_service.cancel(request.app.state.ctx, request.app.state.hub, id, caller)
    return TesCancelTaskResponse()


__all__ = ["router", "tes_errors"]
