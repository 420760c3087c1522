"""Every request of a service: its id, its access log line, its latency metric; and the
service's /ready and /metrics routes.

A pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streamed responses and
run the app in another task, losing the request's context variables).
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from spe.observability.metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from spe.observability.readiness import Readiness
from spe.observability.request_id import (
    REQUEST_ID_HEADER,
    accepted_request_id,
    request_id_var,
    user_var,
)

access_log = logging.getLogger("spe.access")
#: Polled by probes and scrapers: their access lines are DEBUG, not INFO.
_POLLED = frozenset({"/health", "/ready", "/metrics"})
_HEADER = REQUEST_ID_HEADER.lower().encode()
_LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _route_of(scope: dict[str, Any]) -> str:
    """The route template (`/api/v1/jobs/{job_id}`), never the raw path: ids in paths
    would leak into logs and make one metric series per id. No route: `unmatched`."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _user_of(scope: dict[str, Any]) -> str | None:
    state = scope.get("state") or {}
    principal = state.get("principal")  # the policy door's (spe/web/access.py)
    if principal is not None:
        return principal.subject
    return state.get("caller")  # a node's hub door: the user the hub vouched for


class ObservabilityMiddleware:
    def __init__(self, app, metrics: ServiceMetrics, name: str = "") -> None:
        self.app = app
        self.metrics = metrics
        # Which service wrote the line, for logs of a federation collected in one place.
        self.who = {"service": metrics.service, "instance": name}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == _HEADER:
                incoming = value.decode("latin-1")
                break
        rid = accepted_request_id(incoming)
        # Not reset afterwards: each request runs in its own task (its own context), and
        # uvicorn's log of an unhandled error, written after this returns, keeps the id.
        request_id_var.set(rid)
        user_var.set(None)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER]
                headers.append((_HEADER, rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route, method = _route_of(scope), scope.get("method", "")
            self.metrics.http_latency.labels(method, route, str(status)).observe(seconds)
            user = _user_of(scope)
            level = (logging.DEBUG if route in _POLLED  # /ready's 503 is logged by itself
                     else logging.ERROR if status >= 500 else logging.INFO)
            access_log.log(level, "%s %s %s", method, route, status, extra={
                **self.who, "method": method, "route": route, "status": status,
                "duration_ms": round(seconds * 1000, 1), "user": user,
                "client": (scope.get("client") or ("",))[0]})


def _metrics_refusal(request: Request, token: str | None, development: bool) -> str | None:
    """Why this caller may not read /metrics (None: it may)."""
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode()):
            return None
        return "a bearer token (SPE_METRICS_TOKEN) is required"
    client = request.client.host if request.client else ""
    if development and client in _LOOPBACK:
        return None
    return "metrics are served only with SPE_METRICS_TOKEN set (its bearer token)"


def install_observability(app: FastAPI, metrics: ServiceMetrics, readiness: Readiness) -> None:
    """The middleware, GET /ready (public: check names, states and reasons an operator can
    act on; no paths, tokens, counts of people or tracebacks) and GET /metrics (a bearer
    token of its own, not the users' identity provider: a scraper is no user)."""
    ctx = app.state.ctx
    settings = ctx.settings
    token = (settings.metrics_token.get_secret_value()
             if settings.metrics_token is not None else None)
    app.state.metrics = metrics
    app.state.readiness = readiness
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, name=ctx.name)

    @app.get("/ready", tags=["health"], responses={503: {"description": "not ready"}})
    async def ready() -> JSONResponse:
        report = await run_in_threadpool(readiness.report)
        return JSONResponse(report.as_json(ctx.service, ctx.name),
                            status_code=200 if report.ok else 503)

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={401: {"description": "no or a wrong metrics token"}})
    async def prometheus_metrics(request: Request) -> Response:
        why = _metrics_refusal(request, token, settings.environment == "development")
        if why is not None:
            await run_in_threadpool(_audit_refusal, ctx, request, why)
            return JSONResponse({"error": "not_authenticated", "detail": why},
                                status_code=401)
        # Fresh gauges (readiness, audit length, certificates) at every scrape; cached.
        await run_in_threadpool(readiness.report)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _audit_refusal(ctx, request: Request, why: str) -> None:
    """Refused scrapes are audited (someone probing); allowed ones are not (every 15 s,
    no personal data in them)."""
    from sqlalchemy.exc import SQLAlchemyError

    from spe.db import session_scope

    try:
        with session_scope(ctx.sessions) as session:
            ctx.audit.record(session, actor="anonymous", action="metrics",
                             object="GET /metrics", decision="deny", reason=why,
                             details={"client": request.client.host if request.client else ""})
    except SQLAlchemyError:  # the database down: refused all the same, /ready says why
        logging.getLogger("spe.audit").exception("a refused scrape could not be audited")
