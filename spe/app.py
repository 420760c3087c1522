"""The central service's app factory: a composition point, so it may import every package."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from catalogue.endpoints import router as catalogue_router
from catalogue.pages import STATIC_DIR as CATALOGUE_STATIC
from catalogue.pages import STATIC_PATH as CATALOGUE_STATIC_PATH
from catalogue.pages import router as catalogue_pages
from gateway.hub.beacon import error_shape as beacon_errors
from gateway.hub.beacon import router as beacon_router
from gateway.hub.endpoints import router as hub_router
from gateway.hub.fanout import Fanout, push_permit
from gateway.hub.federated.endpoints import router as fed_router
from gateway.hub.membership import Membership
from gateway.hub.membership.endpoints import router as membership_router
from gateway.hub.pages import STATIC_DIR as QUERY_STATIC
from gateway.hub.pages import STATIC_PATH as QUERY_STATIC_PATH
from gateway.hub.pages import router as query_pages
from gateway.hub.service import Hub
from gateway.hub.tes_endpoints import router as tes_router
from gateway.hub.tes_endpoints import tes_errors
from spe.airlock.review.endpoints import router as airlock_router
from spe.airlock.review.pages import STATIC_DIR as AIRLOCK_STATIC
from spe.airlock.review.pages import STATIC_PATH as AIRLOCK_STATIC_PATH
from spe.airlock.review.pages import router as airlock_pages
from spe.airlock.review.withhold import withhold_for_permit
from spe.audit import CENTRAL_AUDIT
from spe.audit.endpoints import router as audit_router
from spe.audit.schedule import signing_audit
from spe.background import stop_tasks
from spe.db import make_engine, make_sessionmaker
from spe.identity import DemoIssuer, demo_issuer, machine_token, make_verifier
from spe.observability.wiring import observe
from spe.permits.endpoints import router as permits_router
from spe.permits.pages import STATIC_DIR as PERMITS_STATIC
from spe.permits.pages import STATIC_PATH as PERMITS_STATIC_PATH
from spe.permits.pages import router as permits_pages
from spe.policy import make_policy_service
from spe.settings import Settings, get_settings
from spe.users import service as users
from spe.users import suspensions
from spe.users.endpoints import router as users_router
from spe.web import AppContext
from spe.web.docs import api_docs_options, install_api_docs
from spe.web.health import router as health_router
from spe.web.home import router as home_router
from spe.web.https import StrictTransportSecurity
from spe.web.pages import STATIC_DIR as COMMON_STATIC
from spe.web.pages import STATIC_PATH as COMMON_STATIC_PATH
from spe.web.refusals import install_refusals

__all__ = ["CENTRAL_AUDIT", "create_central_app"]


def create_central_app(settings: Settings | None = None, *, hub: Hub | None = None) -> FastAPI:
    settings = settings or get_settings()
    issuer: DemoIssuer | None = None if settings.oidc_jwks_url else demo_issuer(settings)
    engine = make_engine(settings.resolved_database_url)
    ctx = AppContext(
        service="central",
        settings=settings,
        sessions=make_sessionmaker(engine),
        verifier=make_verifier(settings, issuer),
        policy=make_policy_service(settings),
        audit=CENTRAL_AUDIT,
        name="central",
        on_principal=users.Registrar(),
        refuse_principal=suspensions.refused,
    )
    app = FastAPI(title="EHDS SPE: central services", version="0.1.0",
                  lifespan=signing_audit(_lifespan(settings, issuer)),
                  **api_docs_options(settings),
                  max_body_size=settings.max_request_bytes)
    app.state.ctx = ctx
    app.state.hub = hub if hub is not None else _hub(settings)
    if hub is None and app.state.hub is not None:
        # Institutions added and removed at the running centre (gateway/hub/membership).
        app.state.hub.fanout.membership = Membership(ctx.sessions, settings.federation_nodes)
    app.state.crl_push = _crl_pusher(app.state.hub, settings)
    from catalogue.status import HarvestStatus

    app.state.harvest_status = HarvestStatus()  # the harvest rounds, for the catalogue page
    app.state.harvest_now = None  # set below when the scheduled harvest is on
    app.state.dataset_holder = _dataset_holder
    app.state.permit_push = (
        None if app.state.hub is None
        else functools.partial(push_permit, app.state.hub.fanout,
                               signer=app.state.hub.signer))
    app.state.suspension_push = _suspension_pusher(app.state.hub, ctx)
    if app.state.hub is not None:
        # The hub signs no context for a suspended user; the others carry the list's epoch.
        app.state.hub.signer.epoch_of = suspensions.EpochOf(ctx.sessions)
    # A suspended or revoked permit's pending outputs are withheld (spe/airlock/review).
    app.state.permit_stopped = functools.partial(_withhold, ctx)
    # Refusals under the Beacon's prefix are Beacon v2 error responses; under TES's, a
    # request the schema refuses is a 400, as TES clients expect.
    install_refusals(app, (beacon_errors, tes_errors))
    app.add_middleware(StrictTransportSecurity)  # HSTS on answers over HTTPS
    app.include_router(health_router)
    app.include_router(users_router)
    app.include_router(membership_router)
    app.include_router(audit_router)
    app.include_router(catalogue_router)
    app.include_router(hub_router)
    app.include_router(fed_router)
    app.include_router(permits_router)
    app.include_router(airlock_router)
    app.include_router(beacon_router)
    app.include_router(tes_router)  # GA4GH TES over the jobs
    # The CSS/JS every web page loads before its own (and the navigation's, the home page's).
    app.mount(COMMON_STATIC_PATH, StaticFiles(directory=COMMON_STATIC), name="common-static")
    # The home page: what the SPE does, a link to every page.
    app.include_router(home_router)
    # /docs and /redoc with Swagger UI's and ReDoc's assets from the package (no CDN).
    install_api_docs(app)
    # The catalogue's web pages (public, like its API reads) and their CSS/JS.
    app.include_router(catalogue_pages)
    app.mount(CATALOGUE_STATIC_PATH, StaticFiles(directory=CATALOGUE_STATIC),
              name="catalogue-static")
    # The federated query builder (its API needs a researcher's token; the page does not).
    app.include_router(query_pages)
    app.mount(QUERY_STATIC_PATH, StaticFiles(directory=QUERY_STATIC), name="query-static")
    # The permit pages: applying, the institutions' reviews, the access body's decisions.
    app.include_router(permits_pages)
    app.mount(PERMITS_STATIC_PATH, StaticFiles(directory=PERMITS_STATIC),
              name="permits-static")
    # The airlock's review page for output checkers (the jobs page is served with the
    # query builder's: gateway/hub/pages.py, the same static folder).
    app.include_router(airlock_pages)
    app.mount(AIRLOCK_STATIC_PATH, StaticFiles(directory=AIRLOCK_STATIC),
              name="airlock-static")
    if issuer is not None:
        _mount_demo_issuer(app, issuer)
    metrics = observe(app)  # /ready, /metrics, request ids, access log
    if app.state.hub is not None:
        app.state.hub.fanout.observe = metrics.federated_result
    return app


def _suspension_pusher(hub: Hub | None, ctx: AppContext):
    """What sends the suspension list to the nodes (on change, and periodically to those
    behind: gateway/hub/suspensions.py)."""
    if hub is None:
        return None
    from gateway.hub.suspensions import SuspensionPusher
    from spe.db import session_scope

    def current():
        with session_scope(ctx.sessions) as session:
            return suspensions.suspension_list(session)

    return SuspensionPusher(hub.fanout, hub.signer, current)


def _withhold(ctx: AppContext, session, pid: str) -> None:
    withhold_for_permit(session, pid, policy=ctx.policy, audit=ctx.audit)


def _dataset_holder(session, identifier: str) -> str | None:
    """The node holding a catalogue dataset (permits name datasets from the catalogue)."""
    from catalogue import repository

    dataset = repository.get_by_identifier(session, identifier)
    return None if dataset is None else dataset.node_id


def _hub(settings: Settings) -> Hub | None:
    """The federated query hub, when the federation is configured: its nodes (none yet is
    fine when the PKI has the hub's key: an admin adds them), and the PKI whose hub key
    signs the query contexts and whose certificates carry the mutual TLS (re-read when
    they or the revocation list change: spe.pki.ClientTLS)."""
    if settings.pki_dir is None or not (
            settings.federation_nodes or (settings.pki_dir / "hub.key").is_file()):
        return None
    from spe.pki import ClientTLS, private_key_of
    from spe.wire.context import ContextSigner

    key = private_key_of(settings.pki_dir / "hub.key")
    return Hub(
        fanout=Fanout(settings.federation_nodes, timeout=settings.query_timeout_seconds,
                      tls=ClientTLS(settings.pki_dir, "hub")),
        signer=ContextSigner(key), private_key=key,
    )


def _crl_pusher(hub: Hub | None, settings: Settings):
    """What sends the CA's revocation list to every node (gateway/hub/crl_push.py)."""
    if hub is None or settings.pki_dir is None:
        return None
    from gateway.hub.crl_push import CrlPusher

    return CrlPusher(hub.fanout, hub.signer, settings.pki_dir)


def _node_tls(settings: Settings):
    """The client side of mutual TLS towards the nodes, when the federation has a PKI."""
    if settings.pki_dir is None:
        return None
    from spe.pki import client_ssl_context

    return client_ssl_context(settings.pki_dir, "hub")


def _harvest_nodes(settings: Settings, hub: Hub | None) -> Callable[[], list[str]]:
    """The nodes the scheduled harvest calls, read every round: `SPE_CATALOGUE_NODES`
    with the federation's members as they are now (an institution an admin added is
    harvested too, one removed is not)."""

    def nodes() -> list[str]:
        membership = getattr(hub.fanout, "membership", None) if hub is not None else None
        if membership is None:
            return list(settings.catalogue_nodes)
        current = membership.current()
        removed = {url for node_id, url in membership.configured.items()
                   if node_id not in current}
        urls = [u for u in settings.catalogue_nodes if u not in removed]
        return urls + [u for u in current.values() if u not in urls]

    return nodes


def _lifespan(settings: Settings, issuer: DemoIssuer | None):
    """Background work of the central service: the catalogue's scheduled harvest,
    collecting finished jobs' outputs from the nodes into the airlock, and bringing nodes
    up to date with the suspension list."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from catalogue.schedule import harvest_periodically

        task = None
        # The harvest calls the nodes as the central service's own client of the identity
        # provider (client credentials), never with a user's token.
        token = machine_token(settings, issuer)
        if settings.catalogue_nodes and token is None:
            logging.getLogger("spe.catalogue").warning(
                "SPE_CATALOGUE_NODES is set but the central service has no client of the "
                "identity provider (SPE_OIDC_CLIENT_ID, SPE_OIDC_CLIENT_SECRET): the "
                "scheduled harvest is off")
        elif settings.catalogue_nodes:
            from catalogue.schedule import harvest_in_background

            nodes, status = _harvest_nodes(settings, app.state.hub), app.state.harvest_status
            task = asyncio.create_task(harvest_periodically(
                settings.resolved_database_url, nodes, token,
                settings.catalogue_harvest_interval_seconds, tls=_node_tls(settings),
                policy=app.state.ctx.policy, status=status))

            def harvest_now(trigger: str) -> None:  # POST /api/v1/catalogue/harvest
                harvest_in_background(settings.resolved_database_url, nodes(), token, status,
                                      trigger, tls=_node_tls(settings),
                                      policy=app.state.ctx.policy)

            app.state.harvest_now = harvest_now
        tasks = [task] if task is not None else []
        if app.state.hub is not None:  # finished jobs' outputs into the airlock
            from gateway.hub.collect import collect_periodically

            tasks.append(asyncio.create_task(collect_periodically(
                app.state.ctx, app.state.hub, settings.job_collect_interval_seconds)))
            # The nodes' signed audit heads, kept here as their witness.
            from gateway.hub.witness import witness_periodically

            tasks.append(asyncio.create_task(witness_periodically(
                app.state.ctx, app.state.hub, settings.audit_witness_interval_seconds)))
        if app.state.suspension_push is not None:  # nodes behind the suspension list
            tasks.append(asyncio.create_task(app.state.suspension_push.run(
                settings.suspension_push_interval_seconds)))
        if app.state.crl_push is not None:  # nodes behind the revocation list
            tasks.append(asyncio.create_task(app.state.crl_push.run()))
        try:
            yield
        finally:
            await stop_tasks(tasks)
            hub = app.state.hub
            if hub is not None:
                await hub.fanout.aclose()

    return lifespan


def _mount_demo_issuer(app: FastAPI, issuer: DemoIssuer) -> None:
    """Publish the demo issuer's keys the way an OIDC provider does, so nodes can fetch them."""

    @app.get("/.well-known/openid-configuration", tags=["identity"])
    def openid_configuration() -> dict:
        return {
            "issuer": issuer.issuer,
            "jwks_uri": f"{issuer.issuer}/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": ["ES256"],
        }

    @app.get("/.well-known/jwks.json", tags=["identity"])
    def jwks() -> dict:
        return issuer.jwks()
