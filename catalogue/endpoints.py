"""The public catalogue (ARCHITECTURE: tier "public", anyone may read it) and its curation.

Reads carry no token and pass no policy door, like /health: the metadata is public and
holds no small counts (the nodes suppress them). They are not audited either: an
anonymous read of public metadata names nobody, and logging every crawler would bury the
entries that matter. Curation changes data, so it goes through the door and is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from catalogue import rdf, service
from catalogue.schemas import CurationIn, DatasetOut, HarvestStatusOut, SearchOut, SearchParams
from catalogue.status import HarvestNotStarted, HarvestStatus, status_out
from spe.web import AppContext, Caller, DbSession, get_context
from spe.web.responses import refusals

router = APIRouter(prefix="/api/v1/catalogue", tags=["catalogue"])
Ctx = Annotated[AppContext, Depends(get_context)]

TURTLE = "text/turtle"
JSONLD = "application/ld+json"


def _wanted(accept: str | None) -> str:
    """text/turtle or application/ld+json when asked for, plain JSON otherwise."""
    types = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    for media_type in types:
        if media_type in (TURTLE, JSONLD):
            return media_type
    return "application/json"


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _rdf_response(graph, media_type: str) -> Response:
    return Response(rdf.serialize(graph, media_type), media_type=media_type)


@router.get("", responses={200: {"content": {TURTLE: {}, JSONLD: {}}}})
def catalogue(request: Request, session: DbSession,
              accept: Annotated[str | None, Header()] = None) -> Response:
    """Every dataset: JSON by default, HealthDCAT-AP as Turtle or JSON-LD by Accept header."""
    datasets = service.list_datasets(session)
    wanted = _wanted(accept)
    if wanted == "application/json":
        return JSONResponse([service.dataset_out(d).model_dump(mode="json")
                             for d in datasets])
    return _rdf_response(rdf.catalogue_graph(datasets, _base_url(request)), wanted)


@router.get("/search", response_model=SearchOut)
def search(params: Annotated[SearchParams, Query()], session: DbSession) -> SearchOut:
    """Full-text search with facets (values of one facet OR'ed, facets AND'ed) and stable
    pagination. Malformed or unknown parameters get a 422 naming them."""
    return service.search(session, params)


@router.get("/datasets/{identifier:path}", responses={200: {"content": {TURTLE: {},
                                                                      JSONLD: {}}}})
def dataset(identifier: str, request: Request, session: DbSession,
            accept: Annotated[str | None, Header()] = None) -> Response:
    ds = service.get_dataset(session, identifier)
    wanted = _wanted(accept)
    if wanted == "application/json":
        return JSONResponse(service.dataset_out(ds).model_dump(mode="json"))
    return _rdf_response(rdf.dataset_graph(ds, _base_url(request)), wanted)


@router.patch("/datasets/{identifier:path}", response_model=DatasetOut)
def curate(identifier: str, changes: CurationIn, caller: Caller, ctx: Ctx,
           session: DbSession) -> DatasetOut:
    """Edit curated fields (approvers of the holding institution only, decided by
    policies/catalogue/curation); later harvests keep them."""
    ds = service.curate_as(session, identifier, changes, principal=caller,
                           policy=ctx.policy, sessions=ctx.sessions, audit=ctx.audit)
    return service.dataset_out(ds)


def _harvests(request: Request) -> HarvestStatus:
    status = getattr(request.app.state, "harvest_status", None)
    if status is None:
        status = request.app.state.harvest_status = HarvestStatus()
    return status


@router.get("/harvest", response_model=HarvestStatusOut)
def harvest_status(_: Caller, request: Request, session: DbSession) -> HarvestStatusOut:
    """The harvest: the round running now (each node waiting, fetching, validated, stored
    or failed, with the reason), the last one finished, and per node in the catalogue its
    datasets and last harvest time. HDAB and admins: it names the nodes' addresses."""
    return status_out(session, _harvests(request),
                      can_start=getattr(request.app.state, "harvest_now", None) is not None)


@router.post("/harvest", response_model=HarvestStatusOut, status_code=202,
             responses=refusals(409))
def start_harvest(caller: Caller, request: Request, session: DbSession) -> HarvestStatusOut:
    """Harvest this service's nodes now (as the schedule does), in the background; follow it
    with GET. 409 when a round is running or this service harvests no nodes."""
    start = getattr(request.app.state, "harvest_now", None)
    if start is None:
        raise HarvestNotStarted(
            "this service harvests no nodes of its own: set SPE_CATALOGUE_NODES and its "
            "client of the identity provider (SPE_OIDC_CLIENT_ID), or run "
            "`spe catalogue harvest --node URL`")
    start(f"asked by {caller.id}")
    return status_out(session, _harvests(request), can_start=True)
