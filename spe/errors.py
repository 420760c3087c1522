"""The project's exception root and the one handler that renders it."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SPEError)
    async def _spe_error(_: Request, exc: SPEError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.error, "detail": exc.detail},
            status_code=exc.status_code,
            headers=exc.headers,
        )

