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
    document declares for the routes under `prefix` (spe/web/responses.py)."""

    prefix: str
    render: Callable[[int, str], dict[str, Any]]
    model: type[BaseModel]

    def covers(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix.rstrip("/") + "/")


def shape_for(app: FastAPI, path: str) -> ErrorShape | None:
    """The error shape the app was given for `path`, if any (`install_error_handlers`)."""
    return next((s for s in getattr(app.state, "error_shapes", ()) if s.covers(path)), None)


def in_words(detail: str | list[dict[str, Any]]) -> str:
    """A reason as one sentence: a validation error's list as `where: what; ...`."""
    if isinstance(detail, str):
        return detail
    return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg', '')}"
                     for d in detail)


def error_response(request: Request, status: int, error: str,
                   detail: str | list[dict[str, Any]],
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one rendering of a refusal: the project's shape, or the path's `ErrorShape`."""
    shape = shape_for(request.app, request.url.path)
    body = (shape.render(status, in_words(detail)) if shape is not None
            else {"error": error, "detail": detail})
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, shapes: tuple[ErrorShape, ...] = ()) -> None:
    app.state.error_shapes = shapes

    @app.exception_handler(SPEError)
    async def _spe_error(request: Request, exc: SPEError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.error, exc.detail, exc.headers)

