"""Institutions added and removed at the running centre: through the API (admin role at
the policy door, audited) and the CLI, picked up by the hub's next query, no restart; on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.cli.main import app as cli
from spe.db import make_engine
from spe.identity import DemoIssuer
from spe.pki import server_ssl_options
from spe.settings import Settings
from tests.central import catalogued_central
from tests.gateway.conftest import ISSUER
from tests.servers import bind, serve

runner = CliRunner()
QUERY = {"where": {"type": "patient", "sex": "female"}}
NODES = "/api/v1/federation/nodes"


@dataclass
class World:
    settings: Settings  # the centre's, with SPE_FEDERATION_NODES = site-a only
    urls: dict[str, str]  # the two running nodes
    pki: Path
    issuer: DemoIssuer

    def bearer(self, user: str, *roles: str) -> dict:
        return {"Authorization": f"Bearer {self.issuer.mint(user, list(roles))}"}


@pytest.fixture
def world(pki, node_dbs, tmp_path, database_url) -> Iterator[World]:
    own = tmp_path / "pki"
    shutil.copytree(pki, own)  # removals revoke: the session's PKI stays as it is
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER, pki_dir=own,
                        environment="development")
    socks = {site: bind() for site in ("site-a", "site-b")}
    urls = {site: f"https://127.0.0.1:{s.getsockname()[1]}" for site, s in socks.items()}
    catalogued_central(database_url, urls, patients=40)
    with serve(create_node_app(NodeConfig("site-a", "site-a",
                                          f"sqlite:///{node_dbs['site-a']}"), settings),
               socks["site-a"], lifespan="off", **server_ssl_options(own, "site-a")), \
            serve(create_node_app(NodeConfig("site-b", "site-b",
                                             f"sqlite:///{node_dbs['site-b']}"), settings),
                  socks["site-b"], lifespan="off", **server_ssl_options(own, "site-b")):
        yield World(settings.model_copy(update={
            "database_url": database_url, "federation_nodes": {"site-a": urls["site-a"]}}),
            urls, own, DemoIssuer(settings.issuer_key_path, ISSUER, "spe"))


def _asked(central: TestClient, world: World) -> set[str]:
    resp = central.post("/api/v1/query", json=QUERY,
                        headers=world.bearer("dave", "researcher"))
    if resp.status_code == 503:  # no node at all
        return set()
    assert resp.status_code == 200, resp.text
    answered = {n["node_id"] for n in resp.json()["nodes"]
                if n["status"] in ("answered", "suppressed")}
    assert answered == {n["node_id"] for n in resp.json()["nodes"]}, resp.text
    return answered


def _audit(database_url: str, prefix: str) -> list[tuple]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT action, actor, object, decision FROM audit_log "
                "WHERE action LIKE :p ORDER BY seq"), {"p": f"{prefix}%"})]
    finally:
        engine.dispose()


def test_an_admin_adds_and_removes_institutions_at_the_running_centre(world):
    admin = world.bearer("root", "admin")
    with TestClient(create_central_app(world.settings)) as central:
        assert _asked(central, world) == {"site-a"}
        added = central.post(NODES, headers=admin, json={
            "node_id": "site-b", "url": world.urls["site-b"], "reason": "joined in May"})
        assert added.status_code == 201, added.text
        assert _asked(central, world) == {"site-a", "site-b"}  # the next query, no restart
        listed = central.get(NODES, headers=admin).json()
        assert [(n["node_id"], n["source"]) for n in listed] == [
            ("site-a", "environment"), ("site-b", "admin")]
        removed = central.delete(f"{NODES}/site-a", headers=admin,
                                 params={"reason": "left the federation"})
        assert removed.status_code == 200, removed.text
        assert _asked(central, world) == {"site-b"}
    # A restart with the same SPE_FEDERATION_NODES keeps the admins' changes.
    with TestClient(create_central_app(world.settings)) as central:
        assert _asked(central, world) == {"site-b"}
    assert _audit(world.settings.database_url, "federation.") == [
        ("federation.add", f"root@{ISSUER}", "site-b", "allow"),
        ("federation.remove", f"root@{ISSUER}", "site-a", "allow")]


def test_only_an_admin_changes_the_federation(world):
    body = {"node_id": "site-b", "url": world.urls["site-b"]}
    with TestClient(create_central_app(world.settings)) as central:
        for headers, status in ((world.bearer("eve", "researcher"), 403),
                                (world.bearer("eve", "hdab", "output_checker"), 403), ({}, 401)):
            assert central.post(NODES, json=body, headers=headers).status_code == status
            assert central.delete(f"{NODES}/site-a", headers=headers).status_code == status
            assert central.get(NODES, headers=headers).status_code == status
        assert _asked(central, world) == {"site-a"}
    denied = [r for r in _audit(world.settings.database_url, "")
              if r[1] == f"eve@{ISSUER}" and r[3] == "deny"]
    assert len(denied) == 6  # every refused attempt recorded


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"node_id": "site-b", "url": "ftp://node-b"}, 422, "not an https:// URL"),
    ({"node_id": "site-b", "url": "https://"}, 422, "not an https:// URL"),
    ({"node_id": "site-b", "url": "https://node-b:99999"}, 422, "not a URL"),
    ({"node_id": "Site B", "url": "https://node-b"}, 422, "node_id"),
    ({"node_id": "site-a", "url": "{site-a}"}, 409, "already a member"),
])
def test_bad_changes_are_refused_with_a_reason(world, body, status, says):
    body = {**body, "url": body["url"].replace("{site-a}", world.urls["site-a"])}
    admin = world.bearer("root", "admin")
    with TestClient(create_central_app(world.settings)) as central:
        resp = central.post(NODES, json=body, headers=admin)
        assert resp.status_code == status, resp.text
        assert says in resp.text
        gone = central.delete(f"{NODES}/site-z", headers=admin)
        assert gone.status_code == 404
        assert "not a member" in gone.json()["detail"]
        assert _asked(central, world) == {"site-a"}
    assert _audit(world.settings.database_url, "federation.") == []


def test_the_cli_adds_lists_and_removes_with_revocation(world, tmp_path):
    central_sock = bind()
    app = create_central_app(world.settings)
    hub = f"http://127.0.0.1:{central_sock.getsockname()[1]}"
    token = world.issuer.mint("root", ["admin"])
    with serve(app, central_sock):
        def spe(*args: str):
            return runner.invoke(cli, ["federation", *args, "--hub", hub, "--token", token])

        assert spe("add", "site-b", world.urls["site-b"], "--reason", "new").exit_code == 0
        listed = spe("list")
        assert listed.exit_code == 0
        assert f"site-b\t{world.urls['site-b']}\tadmin" in listed.output
        with TestClient(app) as central:
            assert _asked(central, world) == {"site-a", "site-b"}
        crl_before = (world.pki / "crl.pem").read_bytes()
        removed = spe("remove", "site-b", "--revoke", "--reason", "contract ended")
        assert removed.exit_code == 0, removed.output
        answer = json.loads(removed.output)
        assert answer["removed"] is True
        assert len(answer["revoked"]) == 1
        assert answer["crl_pushed"] == {"site-a": "delivered"}
        assert (world.pki / "crl.pem").read_bytes() != crl_before
        listed = runner.invoke(cli, ["pki", "list", "--ca", str(world.pki)])
        assert any(line.startswith(answer["revoked"][0]) and "revoked" in line
                   for line in listed.output.splitlines())
        # Added back by mistake: its certificate is revoked, so the hub cannot reach it.
        assert spe("add", "site-b", world.urls["site-b"]).exit_code == 0
        with TestClient(app) as central:
            resp = central.post("/api/v1/query", json=QUERY,
                                headers=world.bearer("dave", "researcher"))
            nodes = {n["node_id"]: n["status"] for n in resp.json()["nodes"]}
            assert nodes["site-b"] == "unreachable"
        refused = runner.invoke(cli, ["federation", "remove", "site-z", "--hub", hub,
                                      "--token", token])
        assert refused.exit_code == 1
        assert "not a member" in refused.output
    assert [r[0] for r in _audit(world.settings.database_url, "federation.")] == [
        "federation.add", "federation.remove", "federation.add"]
    assert [r[0] for r in _audit(world.settings.database_url, "pki.")] == ["pki.revoke"]


def test_the_scheduled_harvest_follows_the_members_at_the_running_centre(world):
    """An institution added at the running centre is harvested from the next round on,
    one removed is not, without touching SPE_CATALOGUE_NODES or restarting."""
    from catalogue.schedule import harvest_round
    from spe.app import _harvest_nodes, _node_tls

    settings = world.settings.model_copy(update={"catalogue_nodes": [world.urls["site-a"]]})
    admin = world.bearer("root", "admin")
    app = create_central_app(settings)
    nodes = _harvest_nodes(settings, app.state.hub)
    with TestClient(app) as central:
        assert nodes() == [world.urls["site-a"]]
        assert central.post(NODES, headers=admin, json={
            "node_id": "site-b", "url": world.urls["site-b"]}).status_code == 201
        assert nodes() == [world.urls["site-a"], world.urls["site-b"]]
        engine = make_engine(settings.database_url)
        try:
            with engine.begin() as conn:  # what site-b had in the catalogue goes
                conn.execute(text("DELETE FROM catalogue_facets WHERE dataset_id IN "
                                  "(SELECT id FROM catalogue_datasets WHERE node_id = 'site-b')"))
                conn.execute(text("DELETE FROM catalogue_datasets WHERE node_id = 'site-b'"))
            token = world.issuer.mint("catalogue-harvester", ["hdab"])
            assert harvest_round(settings.database_url, nodes(), token,
                                 tls=_node_tls(settings)) == 0
            with engine.connect() as conn:
                holders = set(conn.execute(text(
                    "SELECT DISTINCT node_id FROM catalogue_datasets")).scalars())
        finally:
            engine.dispose()
        assert holders == {"site-a", "site-b"}
        assert central.delete(f"{NODES}/site-a", headers=admin).status_code == 200
        assert nodes() == [world.urls["site-b"]]
