"""Every route of the central app and of a node passes a door, or is listed as public in
spe/web/public.py: a route added without one fails here. A node's door (gateway/node/trust)
is the hub's (certificate and signed context) or a certificate check before the policy
door: a bearer token alone reaches nothing at a node."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from gateway.node.trust.door import PEER_CHECKS, hub_caller
from spe.app import create_central_app
from spe.settings import Settings
from spe.web import Caller
from spe.web.access import authorize
from spe.web.public import DOCS, PUBLIC


def _calls(dependant) -> set:
    if dependant is None:
        return set()
    out = {dependant.call}
    for sub in dependant.dependencies:
        out |= _calls(sub)
    return out


def _passes_door(service: str, calls: set) -> bool:
    if service == "central":
        return authorize in calls
    # At a node the policy door counts only behind a certificate check.
    return hub_caller in calls or (authorize in calls and bool(calls & set(PEER_CHECKS)))


def _routes(app) -> list[tuple[str, set]]:
    out = []
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, Mount):
            out.append((f"MOUNT {route.path}", set()))
            continue
        calls = _calls(getattr(route, "dependant", None))
        out.extend((f"{method} {route.path}", calls)
                   for method in sorted((route.methods or set()) - {"HEAD"}))
    return out


@pytest.fixture(scope="module")
def apps(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("doors")
    settings = Settings(data_dir=tmp, environment="development")
    return {"central": create_central_app(settings),
            "node": create_node_app(NodeConfig("site-x", "site-x",
                                               f"sqlite:///{tmp / 'node.db'}"), settings)}


@pytest.mark.parametrize("service", ["central", "node"])
def test_every_route_passes_a_door_or_is_listed_public(apps, service):
    routes = _routes(apps[service])
    guarded = [name for name, calls in routes if _passes_door(service, calls)]
    assert len(guarded) >= (20 if service == "central" else 10)  # the walk found them
    doorless = sorted(name for name, calls in routes
                      if not _passes_door(service, calls) and name not in PUBLIC[service])
    assert doorless == [], f"routes of the {service} app that pass no door"


@pytest.mark.parametrize("service", ["central", "node"])
def test_the_public_list_names_only_routes_that_exist_without_a_door(apps, service):
    routes = dict(_routes(apps[service]))
    listed = PUBLIC[service] - DOCS  # API docs are off in production
    assert listed
    assert sorted(listed - set(routes)) == [], "listed public but no such route"
    assert sorted(n for n in listed if _passes_door(service, routes[n])) == [], \
        "listed public but behind a door"


def test_a_node_route_with_a_token_door_only_is_caught():
    """The check itself: a node route behind the policy door but no certificate check
    (what the index summary was) does not count as passing a node door."""
    app = FastAPI()

    @app.get("/api/v1/index/summary")
    def summary(_: Caller) -> dict:
        return {}

    ((name, calls),) = [r for r in _routes(app) if r[0].endswith("summary")]
    assert authorize in calls
    assert not _passes_door("node", calls)
