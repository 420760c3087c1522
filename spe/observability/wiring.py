"""One call per app factory: its metrics, its readiness checks, its request ids."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from spe.background import stop_tasks
from spe.observability import checks
from spe.observability.audit_watch import AuditWatch
from spe.observability.metrics import ServiceMetrics
from spe.observability.middleware import install_observability
from spe.observability.readiness import Check, Readiness


def observe(app: FastAPI, extra_checks: list[Check] | None = None) -> ServiceMetrics:
    """Wire observability into an app whose `state.ctx` is set; `extra_checks` are what
    only its factory knows (a node's sources)."""
    ctx = app.state.ctx
    settings = ctx.settings
    metrics = ServiceMetrics(ctx.service)

    def checkpointer_alarm() -> str | None:
        checkpointer = getattr(app.state, "audit_checkpointer", None)
        return None if checkpointer is None else checkpointer.alarm

    watch = AuditWatch(ctx.audit, ctx.sessions, metrics=metrics, other_alarm=checkpointer_alarm)
    found: list[Check] = [("database", checks.database(ctx.sessions)), *(extra_checks or [])]
    if settings.oidc_jwks_url:
        # Fresh as long as the verifier itself keeps its fetched keys (spe/identity).
        found.append(("identity_provider", checks.identity_provider(
            settings.oidc_jwks_url,
            lambda: float(getattr(getattr(ctx.verifier, "jwks", None), "ttl", 300)))))
    found.append(("policy", checks.policy(ctx.policy, ctx.service)))
    found.append(("audit_chain", watch.check))
    if settings.pki_dir is not None:
        found.append(("certificates", checks.certificates(settings.pki_dir,
                                                          settings.cert_warn_days, metrics)))
    readiness = Readiness(found, metrics, cache_seconds=settings.ready_cache_seconds,
                          alarm=lambda: checkpointer_alarm() is not None)
    app.state.audit_watch = watch
    install_observability(app, metrics, readiness)
    _watch_while_running(app, readiness)
    return metrics


#: How often a running service runs its readiness checks unasked, so that a broken audit
#: chain or a lost identity provider is logged (and the gauges set) even when nothing polls.
WATCH_SECONDS = 60.0


async def _watch(readiness: Readiness) -> None:
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        try:
            await run_in_threadpool(readiness.report)
        except Exception:  # never let the watch end the service
            logging.getLogger("spe.ready").exception("the readiness watch failed")


def _watch_while_running(app: FastAPI, readiness: Readiness) -> None:
    """Wrap the app's lifespan: the checks run once at start (their first line in the log)
    and every WATCH_SECONDS while it runs."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a) -> AsyncIterator:
        async with inner(a) as state:
            await run_in_threadpool(readiness.report)
            task = asyncio.create_task(_watch(readiness), name="readiness-watch")
            try:
                yield state
            finally:
                await stop_tasks([task])

    app.router.lifespan_context = lifespan
