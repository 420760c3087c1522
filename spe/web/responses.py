"""The refusals a route can answer, declared in the OpenAPI document.

FastAPI documents a route's success and a 422 of its own shape; the project answers
refusals as `{"error": ..., "detail": ...}` (spe/errors.py, spe/web/refusals.py; a body
over the limit gets Starlette's plain "Content Too Large"), or under a prefix given an
`spe.errors.ErrorShape` (the Beacon's) in that shape's body. Each operation of the document
gets the refusals its route's shape implies: the door's 401 and 403, a 404 for a route
naming a resource, 400, 413 and 422 for what it reads. A route that answers others (a 409,
the hub's 503) declares them with `refusals(...)`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from spe.errors import ErrorShape, shape_for
from spe.web.access import authorize


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorOut(BaseModel):
    """Every refusal: a machine-readable `error` and a reason for people."""

    error: str
    detail: str | list[FieldError]


_WHY = {400: "request refused (a body that cannot be read, a step out of order)",
        401: "no valid token (or hub context)", 403: "refused by policy",
        404: "no such resource, or not visible to the caller",
        409: "conflicts with the resource's state", 413: "request body over the limit",
        422: "request refused by the schema", 503: "the federation is not configured"}


#: A body over the limit is answered by Starlette's own refusal, in plain text.
TOO_LARGE = {"text/plain": {"schema": {"type": "string", "const": "Content Too Large"}}}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a router or route answering these refusals besides its shape's."""
    return {status: {"model": ErrorOut, "description": _WHY[status]} for status in statuses}


def _passes_the_door(dependant: Dependant) -> bool:
    return any(d.call is authorize or _passes_the_door(d) for d in dependant.dependencies)


def _params(dependant: Dependant) -> list:
    found = (list(dependant.path_params) + list(dependant.query_params)
             + list(dependant.header_params) + list(dependant.body_params))
    for sub in dependant.dependencies:
        found += _params(sub)
    return found


def refusals_of(route: APIRoute, shape: ErrorShape | None = None) -> set[int]:
    """The refusals a route's shape implies; a request the schema refuses is a 422, or
    what `shape` says it is under its prefix."""
    statuses = set()
    if _passes_the_door(route.dependant):
        statuses |= {401, 403}
    if route.dependant.path_params:
        statuses.add(404)
    if route.body_field is not None:
        statuses |= {400, 413}  # 400: not UTF-8, unreadable
    if _params(route.dependant):
        statuses.add(shape.invalid_status if shape is not None else 422)
    return statuses


def declare_refusals(app: FastAPI, document: dict[str, Any]) -> None:
    """Add each API route's refusals to the OpenAPI `document` FastAPI built for `app`."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error.pop("$defs", {}))
    schemas["ErrorOut"] = error
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        shape = shape_for(app, context.path_format)
        own_body = False
        if shape is not None and shape.model is not None:
            # a standard's own error body (spe.errors.ErrorShape)
            own_body, model = True, shape.model.__name__
            own = shape.model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(own.pop("$defs", {}))
            schemas[model] = own
        route_content = content if not own_body else {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}
        for method in context.methods or ():
            operation = document["paths"].get(context.path_format, {}).get(method.lower())
            if operation is None:
                continue
            if shape is not None and shape.invalid_status != 422:
                operation["responses"].pop("422", None)  # FastAPI's own, not answered
            for status in sorted(refusals_of(route, shape)):
                operation["responses"][str(status)] = {
                    "description": _WHY[status],
                    "content": ({**TOO_LARGE, **route_content} if status == 413
                                else route_content)}


__all__ = ["ErrorOut", "declare_refusals", "refusals", "refusals_of"]
