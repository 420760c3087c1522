"""An institution node's app factory (a composition point)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from sqlalchemy.engine import make_url

from gateway.node.audit import router as checkpoints_router
from gateway.node.config import NodeConfig
from gateway.node.endpoints import router as node_router
from gateway.node.federated.endpoints import router as fed_router
from gateway.node.jobs.endpoints import router as jobs_router
from gateway.node.jobs.review_endpoints import router as code_review_router
from gateway.node.jobs.runtime import work_dir_of
from gateway.node.permit_endpoints import router as permits_router
from gateway.node.query.endpoints import router as query_router
from gateway.node.query.perturb import NodeSecret
from gateway.node.source_probe import job_counts, last_sync, source_checks
from gateway.node.trust.door import operator_peer, peers_of
from gateway.node.trust.endpoints import router as trust_router
from spe.audit import AuditLog, NodeAuditEntry, NodeAuditHead
from spe.audit.endpoints import router as audit_router
from spe.audit.schedule import signing_audit
from spe.background import stop_tasks
from spe.db import make_engine, make_sessionmaker
from spe.identity import TokenVerifier, make_verifier
from spe.observability.wiring import observe
from spe.policy import PolicyService, make_policy_service
from spe.settings import Settings
from spe.web import AppContext
from spe.web.docs import api_docs_options, install_api_docs
from spe.web.health import router as health_router
from spe.web.refusals import install_refusals
from spe.wire.context import ContextVerifier

NODE_AUDIT = AuditLog(NodeAuditEntry, NodeAuditHead)


def create_node_app(
    config: NodeConfig,
    settings: Settings,
    *,
    verifier: TokenVerifier | None = None,
    policy: PolicyService | None = None,
    context_verifier: ContextVerifier | None = None,
) -> FastAPI:
    engine = make_engine(config.database_url, **_pool_options(config.database_url))
    ctx = AppContext(
        service="node",
        settings=settings,
        sessions=make_sessionmaker(engine),
        verifier=verifier or make_verifier(settings),
        # Each institution decides with its own Rego; the demo nodes share the repo's.
        policy=policy or make_policy_service(settings),
        audit=NODE_AUDIT,
        name=config.node_id,
    )
    app = FastAPI(title=f"EHDS SPE node: {config.name or config.node_id}", version="0.1.0",
                  lifespan=signing_audit(_lifespan(config, settings)),
                  **api_docs_options(settings),
                  max_body_size=settings.max_request_bytes)
    app.state.ctx = ctx
    app.state.node = config
    app.state.context_verifier = context_verifier or _context_verifier(settings, config)
    app.state.hub_public_key = _hub_public_key(settings)
    # Whose certificates the node's doors know (gateway/node/trust): the hub's, its own.
    app.state.peers = peers_of(settings.pki_dir, config.node_id)
    app.state.job_work_dir = work_dir_of(settings, config.node_id)
    # The record keys' secret of the statistics tier's perturbation, read on first use.
    app.state.cellkey_secret = NodeSecret(settings, config.node_id)
    install_refusals(app)
    install_api_docs(app)  # /docs, /redoc: assets from the package (no CDN); not in production
    app.include_router(health_router)
    app.include_router(node_router)
    app.include_router(query_router)
    app.include_router(permits_router)
    app.include_router(jobs_router)
    app.include_router(code_review_router)  # institutions vetting job code
    app.include_router(fed_router)
    app.include_router(trust_router)
    # The audit routes the centre shares, here for this node's operator only.
    app.include_router(audit_router, dependencies=[Depends(operator_peer)])
    app.include_router(checkpoints_router)  # the hub's witness (spe/audit checkpoints)
    # /ready, /metrics, request ids; /ready says when the index was last synced.
    metrics = observe(app, [*source_checks(config), ("index", last_sync(ctx.sessions))])
    metrics.collect_gauge("spe_job_queue_depth", "This node's jobs by state (queued, "
                          "staging, running).", ["state"], job_counts(ctx.sessions))
    return app


def _pool_options(url: str) -> dict:
    """Connections kept for concurrent requests: the hub sends a node one query per
    researcher at once, and each runs in one of the thread pool's (40) workers. With
    SQLAlchemy's default pool (5, then 10 more closed as soon as they are returned), a
    busy node opened a connection for most queries, its page cache cold: keep 20."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and (
            parsed.database in (None, "", ":memory:") or "memory" in str(parsed.query)):
        return {}  # an in-memory database lives in its connection: SQLAlchemy's own pool
    return {"pool_size": 20, "max_overflow": 20}


def _lifespan(config: NodeConfig, settings: Settings):
    """The node's background work: `SPE_NODE_WORKERS` jobs at once (none at 0), on
    worker threads polling the job table (SQLite), or as procrastinate workers in this
    event loop (PostgreSQL: other machines add `spe node worker`; jobs/dispatch.py)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from gateway.node.jobs import dispatch
        from gateway.node.jobs.runtime import NodeWorkers, make_worker

        ctx = app.state.ctx
        workers = sweeper = task = dispatcher = None
        if dispatch.uses_task_queue(config.database_url):
            dispatcher = dispatch.Dispatcher(config.database_url)
            if settings.node_workers > 0:
                worker = make_worker(config, settings, ctx.policy, ctx.sessions, ctx.audit,
                                     metrics=app.state.metrics)
                sweeper = dispatch.Sweeper(worker, dispatcher, worker.stale_after / 2)
                sweeper.start()
                task = asyncio.create_task(dispatch.run_task_workers(
                    config.database_url, worker, settings.node_workers))
        elif settings.node_workers > 0:
            workers = NodeWorkers(config, settings, ctx.policy, ctx.sessions, ctx.audit,
                                  settings.node_workers, metrics=app.state.metrics)
            workers.start()
        app.state.job_workers = workers
        app.state.job_dispatcher = dispatcher
        try:
            yield
        finally:
            await stop_tasks([task])
            if sweeper is not None:
                sweeper.stop()
            if dispatcher is not None:
                dispatcher.close()
            if workers is not None:
                workers.stop()

    return lifespan


def _hub_public_key(settings: Settings):
    """The key of the hub certificate of the federation's PKI: what the hub's query
    contexts and permit documents must be signed with. None configured: the node answers
    no queries and takes no permits (they are refused, not let through)."""
    if settings.pki_dir is None:
        return None
    from spe.pki import public_key_of

    return public_key_of(settings.pki_dir / "hub.crt")


def _context_verifier(settings: Settings, config: NodeConfig) -> ContextVerifier | None:
    key = _hub_public_key(settings)
    return None if key is None else ContextVerifier(key, config.node_id)
