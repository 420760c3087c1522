"""Refusals made before a route runs: a body over the size limit, a body that is not JSON,
parameters or a body the schema refuses (FastAPI's RequestValidationError).

They are audited like the door's own refusals (spe/web/access.py): who (the caller the
door saw, or the bearer token's subject, or "anonymous"), which route, why. The audit
names fields and error types, never the body's content nor the values given.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from spe.db import session_scope
from spe.errors import (
    ErrorShape,
    SPEError,
    error_response,
    human_message,
    install_error_handlers,
    shape_for,
)
from spe.web.access import _bearer, _route_template
from spe.web.context import get_context
from spe.web.responses import declare_refusals

#: How many of a request's validation errors the audit entry names.
AUDITED_ERRORS = 10
#: A location part the audit may name: a field name or an index (a key the caller made up,
#: which `extra="forbid"` refuses, could be anything: it is written as "?").
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")


def _actor(request: Request) -> str:
    principal = getattr(request.state, "principal", None)  # set by the door when it ran
    if principal is not None:
        return principal.id
    try:
        return get_context(request).verifier.verify(_bearer(request)).id
    except SPEError:
        return "anonymous"


def _record(request: Request, reason: str, details: dict[str, Any]) -> None:
    ctx = get_context(request)
    actor = _actor(request)
    with session_scope(ctx.sessions) as session:
        ctx.audit.record(
            session, actor=actor, action="validate",
            object=f"{request.method} {_route_template(request)}"[:500],
            decision="deny", reason=reason,
            details={"client": request.client.host if request.client else "", **details})


async def audit_refusal(request: Request, reason: str, **details: Any) -> None:
    """One audit entry for a request refused before its route ran, committed on its own."""
    await run_in_threadpool(_record, request, reason, details)


def _where(error: dict[str, Any]) -> str:
    loc = list(error.get("loc", ()))
    if error.get("type") == "extra_forbidden" and len(loc) > 1:
        loc[-1] = "?"
    return ".".join(str(part) if isinstance(part, int) or _NAME.fullmatch(str(part))
                    else "?" for part in loc)


def audited_reason(exc: RequestValidationError) -> str:
    """Where and which rule, e.g. "query.offset less_than_equal": no values."""
    errors = exc.errors()
    named = [f"{_where(e)} {e.get('type', 'invalid')}" for e in errors[:AUDITED_ERRORS]]
    more = f" (and {len(errors) - AUDITED_ERRORS} more)" if len(errors) > AUDITED_ERRORS else ""
    return "invalid request: " + "; ".join(named) + more


def install_refusals(app: FastAPI, shapes: tuple[ErrorShape, ...] = ()) -> None:
    """The project's error handlers, those of the refusals above (audited), and every
    route's refusals declared in the OpenAPI document (spe/web/responses.py). Under a
    prefix of `shapes` every refusal (a route's own, the door's, the schema's, no such
    route) takes that shape's body instead of `{"error", "detail"}`."""
    install_error_handlers(app, shapes)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        await audit_refusal(request, audited_reason(exc), errors=len(exc.errors()))
        # Each field's error in words (spe.errors.human_message): no pydantic links, no
        # value echoed back.
        errors = [{"loc": list(e.get("loc", ())), "msg": human_message(e)}
                  for e in exc.errors()]
        shape = shape_for(request.app, request.url.path)
        status = shape.invalid_status if shape is not None else 422
        return error_response(request, status, "invalid_request", errors)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        """Starlette's and FastAPI's own refusals in the project's shape: no route (404,
        405), and bodies refused before the route, audited (413 over the limit, 400 not
        readable, e.g. not UTF-8)."""
        detail = exc.detail
        if exc.status_code == 413:
            limit = request.scope.get(MAX_BODY_SIZE_SCOPE_KEY)
            await audit_refusal(request, f"request body larger than {limit} bytes")
            # Starlette answers so itself when the declared Content-Length is over the
            # limit (it replaces whatever the app sends): the same when it is counted.
            return PlainTextResponse("Content Too Large", status_code=413)
        if exc.status_code == 400:
            await audit_refusal(request, str(detail))
        if not is_body_allowed_for_status_code(exc.status_code):
            return Response(status_code=exc.status_code, headers=exc.headers)
        error = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return error_response(request, exc.status_code, error, detail, exc.headers)

    @app.exception_handler(OperationalError)
    async def _database_busy(request: Request, exc: OperationalError) -> Response:
        """SQLite (the embedded default) lets one writer at a time and gives up after its
        busy timeout: under a burst of requests that is a 503 to retry, not a 500. The
        request's transaction was rolled back, so nothing is half-written. Anything else
        the database says is a fault, and goes on as one."""
        if "database is locked" not in str(exc.orig):
            raise exc
        return error_response(request, 503, "busy",
                              "the service is busy writing; try again in a moment",
                              {"Retry-After": "1"})

    # FastAPI builds the document when first asked (again if routes change), once every
    # router is included; declaring is idempotent, so it is done on every ask.
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        document = build_openapi()
        declare_refusals(app, document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["audit_refusal", "audited_reason", "install_refusals"]
