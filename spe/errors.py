"""The project's exception root and the one handler that renders it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class SPEError(Exception):
    """An expected refusal: carries its HTTP status and a reason for the caller."""

    status_code = 400
    error = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class NotAuthenticated(SPEError):
    status_code = 401
    error = "not_authenticated"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class Forbidden(SPEError):
    status_code = 403
    error = "forbidden"


class NotFound(SPEError):
    status_code = 404
    error = "not_found"


class Conflict(SPEError):
    status_code = 409
    error = "conflict"


@dataclass(frozen=True)
class ErrorShape:
    """Refusals under `prefix` in a standard's own error body (Beacon v2's
    beaconErrorResponse, say) instead of `{"error": ..., "detail": ...}`: `render` takes the
    HTTP status and the reason in words; `model` is that body's schema, which the OpenAPI
    document declares for the routes under `prefix` (spe/web/responses.py). Both None: the
    project's own body, only the status of a request the schema refuses differing
    (`invalid_status`; GA4GH TES's)."""

    prefix: str
    render: Callable[[int, str], dict[str, Any]] | None  # None: the project's own body
    model: type[BaseModel] | None
    #: The status of a request the schema refuses (FastAPI's 422): a standard whose
    #: clients expect another (GA4GH TES: 400 for a malformed request) says so here.
    invalid_status: int = 422

    def covers(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix.rstrip("/") + "/")


def shape_for(app: FastAPI, path: str) -> ErrorShape | None:
    """The error shape the app was given for `path`, if any (`install_error_handlers`)."""
    return next((s for s in getattr(app.state, "error_shapes", ()) if s.covers(path)), None)


def field_name(loc: Any) -> str:
    """Where a validation error is, as a user names it: `limits.memory_mb` for a body's
    field, `offset (query parameter)` for a parameter."""
    parts = [str(p) for p in (loc or ())]
    where = {"query": "query parameter", "path": "path parameter", "header": "header",
             "cookie": "cookie"}
    if parts and parts[0] in where and len(parts) > 1:
        return f"{'.'.join(parts[1:])} ({where[parts[0]]})"
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "the request"


def _what(n: Any, one: str) -> str:
    return f"{n} {one}" if n == 1 else f"{n} {one}s"


def human_message(error: dict[str, Any]) -> str:
    """What is wrong with one field, in words and without pydantic's links or the value
    given (which may be anything, or secret): "must be at least 64", "must not be
    empty", "is required", "is not a known field"."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    msg = str(error.get("msg", "is not valid"))
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {_what(n, 'character')}"
    if kind == "string_too_long":
        return f"must have at most {_what(ctx.get('max_length'), 'character')}"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {_what(n, 'item')}"
    if kind == "too_long":
        return f"must have at most {_what(ctx.get('max_length'), 'item')}"
    bounds = {"greater_than_equal": ("ge", "must be at least"),
              "less_than_equal": ("le", "must be at most"),
              "greater_than": ("gt", "must be more than"),
              "less_than": ("lt", "must be less than")}
    if kind in bounds and bounds[kind][0] in ctx:
        key, words = bounds[kind]
        return f"{words} {ctx[key]}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind in ("json_invalid",):
        return "is not valid JSON"
    if msg.startswith("Value error, "):
        return msg.removeprefix("Value error, ")
    if msg.startswith("Input should be "):
        return "must be " + msg.removeprefix("Input should be ")
    if msg.startswith("Input should "):
        return "must " + msg.removeprefix("Input should ")
    return msg


def validation_reason(errors: list[dict[str, Any]], *, limit: int = 10) -> str:
    """A validation error's fields in one sentence: `limits.memory_mb: must be at least
    64; entry: must not be empty` (pydantic's `errors()` or the API's `detail` list)."""
    said = []
    for e in errors[:limit]:
        where = field_name(e.get("loc"))
        what = human_message(e)
        said.append(f"{where}: {what}" if where != "the request" else what)
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(said) + more


def in_words(detail: str | list[dict[str, Any]]) -> str:
    """A reason as one sentence: a validation error's list as `where: what; ...`."""
    if isinstance(detail, str):
        return detail
    return validation_reason(detail, limit=len(detail) or 1)


def error_response(request: Request, status: int, error: str,
                   detail: str | list[dict[str, Any]],
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one rendering of a refusal: the project's shape, or the path's `ErrorShape`."""
    shape = shape_for(request.app, request.url.path)
    body = (shape.render(status, in_words(detail))
            if shape is not None and shape.render is not None
            else {"error": error, "detail": detail})
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, shapes: tuple[ErrorShape, ...] = ()) -> None:
    app.state.error_shapes = shapes

    @app.exception_handler(SPEError)
    async def _spe_error(request: Request, exc: SPEError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.error, exc.detail, exc.headers)

