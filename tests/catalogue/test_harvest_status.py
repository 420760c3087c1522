"""The harvest's state through the API (`GET/POST /api/v1/catalogue/harvest`): a round
running now with each node's step, the finished round with a failure's reason, and when
each node in the catalogue was last harvested; readable by HDAB and admins only."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from catalogue.harvester import HarvestStep, harvest_nodes
from gateway.node.orthanc_process import free_port
from spe.app import create_central_app
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.identity import DemoIssuer
from spe.settings import Settings

ISSUER = "http://central"


class _SlowNode:
    """A node whose descriptors answer waits until `release` is set: a harvest in flight."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.asked.set()
                outer.release.wait(30)
                body = b"[]"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_node():
    node = _SlowNode()
    try:
        yield node
    finally:
        node.close()


def _central(tmp_path, nodes: list[str], database_url: str = ""):
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER, environment="development",
                        catalogue_nodes=nodes, database_url=database_url)
    upgrade(settings.resolved_database_url, "central")
    app = create_central_app(settings)
    return app, DemoIssuer(settings.issuer_key_path, ISSUER, "spe")


def _bearer(issuer: DemoIssuer, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.mint('u-' + role, [role])}"}


def test_a_running_harvest_and_its_outcome_are_reported_per_node(tmp_path, slow_node):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app, issuer = _central(tmp_path, [slow_node.url, dead])
    hdab = _bearer(issuer, "hdab")
    with TestClient(app) as client:
        before = client.get("/api/v1/catalogue/harvest", headers=hdab)
        assert before.status_code == 200, before.text
        assert before.json()["running"] is False
        assert before.json()["can_start"] is True

        started = client.post("/api/v1/catalogue/harvest", headers=hdab)
        assert started.status_code == 202, started.text
        assert started.json()["running"] is True
        assert slow_node.asked.wait(10)
        running = client.get("/api/v1/catalogue/harvest", headers=hdab).json()
        assert running["running"] is True
        assert running["current"]["nodes_done"] == 0
        assert running["current"]["nodes_total"] == 2
        steps = {n["url"]: n["phase"] for n in running["current"]["nodes"]}
        assert steps == {slow_node.url: "fetching", dead: "waiting"}

        again = client.post("/api/v1/catalogue/harvest", headers=hdab)
        assert again.status_code == 409
        assert "running already" in again.json()["detail"]

        slow_node.release.set()
        for _ in range(200):
            status = client.get("/api/v1/catalogue/harvest", headers=hdab).json()
            if not status["running"]:
                break
            time.sleep(0.05)
        assert status["running"] is False
        last = status["last"]
        assert last["state"] == "failed"  # one node failed
        assert last["nodes_done"] == last["nodes_total"] == 2
        by_url = {n["url"]: n for n in last["nodes"]}
        assert by_url[slow_node.url]["phase"] == "stored"
        assert by_url[dead]["phase"] == "failed"
        assert "unreachable" in by_url[dead]["error"]


def test_harvest_status_is_for_hdab_and_admins_only(tmp_path):
    app, issuer = _central(tmp_path, [])
    with TestClient(app) as client:
        assert client.get("/api/v1/catalogue/harvest").status_code == 401
        denied = client.get("/api/v1/catalogue/harvest", headers=_bearer(issuer, "researcher"))
        assert denied.status_code == 403
        assert client.post("/api/v1/catalogue/harvest",
                           headers=_bearer(issuer, "researcher")).status_code == 403
        assert client.get("/api/v1/catalogue/harvest",
                          headers=_bearer(issuer, "admin")).status_code == 200


def test_without_nodes_of_its_own_a_harvest_cannot_be_started(tmp_path):
    app, issuer = _central(tmp_path, [])
    with TestClient(app) as client:
        status = client.get("/api/v1/catalogue/harvest", headers=_bearer(issuer, "hdab"))
        assert status.json()["can_start"] is False
        refused = client.post("/api/v1/catalogue/harvest", headers=_bearer(issuer, "hdab"))
        assert refused.status_code == 409
        assert "SPE_CATALOGUE_NODES" in refused.json()["detail"]


def test_each_catalogued_node_shows_its_last_harvest_time(node_clients, synced_nodes,
                                                          tmp_path, central_db):
    clients, issuer = node_clients
    app, central_issuer = _central(tmp_path, [], central_db)
    engine = make_engine(app.state.ctx.settings.resolved_database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            harvest_nodes(session, list(clients), issuer.mint("h", ["hdab"]), clients=clients)
    finally:
        engine.dispose()
    with TestClient(app) as client:
        nodes = client.get("/api/v1/catalogue/harvest",
                           headers=_bearer(central_issuer, "hdab")).json()["nodes"]
    assert [n["node_id"] for n in nodes] == sorted(n.node_id for n in synced_nodes)
    assert all(n["datasets"] == 1 and n["last_harvested_at"] for n in nodes)


def test_the_harvest_callback_counts_nodes_up_to_the_total(node_clients, central_db):
    clients, issuer = node_clients
    urls = [*clients, f"http://127.0.0.1:{free_port()}"]
    steps: list[HarvestStep] = []
    engine = make_engine(central_db)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            harvest_nodes(session, urls, issuer.mint("h", ["hdab"]), clients=clients,
                          progress=steps.append)
    finally:
        engine.dispose()
    assert steps, "the harvest reported no progress"
    done = [s.nodes_done for s in steps]
    assert done == sorted(done)
    assert done[-1] == steps[-1].nodes_total == len(urls)
    phases = [(s.node, s.phase) for s in steps]
    first = urls[0]
    assert [p for n, p in phases if n == first] == ["fetching", "validated", "stored"]
    assert [p for n, p in phases if n == urls[-1]] == ["fetching", "failed"]
    assert "unreachable" in steps[-1].error
