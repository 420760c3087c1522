"""Whom a node trusts, tried the way a compromised node, a captured context and a suspended
user would try it: over real mutual TLS, with certificates from the real `spe pki`, against
the three nodes under uvicorn and the central app whose hub asks them."""

from __future__ import annotations

import functools
import sqlite3
import ssl

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.cli.main import app as cli
from spe.identity import DemoIssuer
from spe.pki import client_ssl_context, private_key_of, server_ssl_options
from spe.wire.context import ContextSigner
from spe.wire.permit import document_hash
from spe.wire.query import Query
from tests.central import catalogued_central
from tests.gateway.conftest import ISSUER, SITES
from tests.servers import bind, serve

FEMALE = {"type": "patient", "sex": "female"}
QUERY = Query.model_validate({"where": FEMALE})
#: A TLS handshake the server ends (TLS 1.3 checks the client certificate after the
#: client's side of the handshake, so the client sees the connection drop).
REFUSED_AT_TLS = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError,
                  ssl.SSLError)


@pytest.fixture
def issuer(node_servers) -> DemoIssuer:
    return DemoIssuer(node_servers.settings.issuer_key_path, ISSUER, "spe")


def bearer(issuer: DemoIssuer, user: str, *roles: str) -> dict:
    return {"Authorization": f"Bearer {issuer.mint(user, list(roles))}"}


def client(node_servers, site: str, certificate: str) -> httpx.Client:
    """A client of `site` presenting `certificate`'s certificate and key."""
    return httpx.Client(base_url=node_servers.urls[site], timeout=10,
                        verify=client_ssl_context(node_servers.pki, certificate))


def context(node_servers, site: str, subject: str, *, user: str = f"dave@{ISSUER}",
            **kw) -> str:
    """A context signed with the hub's key, as the hub signs them."""
    return ContextSigner(private_key_of(node_servers.pki / "hub.key")).sign(
        user=user, roles=kw.pop("roles", ["researcher"]), tier=kw.pop("tier", "statistics"),
        query_hash=subject, node_id=site, **kw)


def audit(node_servers, site: str, where: str) -> list[tuple]:
    with sqlite3.connect(node_servers.dbs[site]) as conn:
        return conn.execute("SELECT actor, action, object, decision, reason FROM audit_log "
                            f"WHERE {where} ORDER BY seq").fetchall()


# -- another node's certificate ---------------------------------------------------------


def test_another_nodes_certificate_is_refused_on_every_route(node_servers, issuer):
    """site-b's own certificate (issued by `spe pki` like the hub's) and a valid access-body
    token: site-a's index summary used to answer with its unsuppressed counts."""
    hdab = bearer(issuer, "hilde", "hdab", "admin")
    calls = [("GET", "/api/v1/index/summary", {}),
             ("GET", "/api/v1/descriptors", {}),
             ("POST", "/api/v1/query", {"json": {"query": QUERY.model_dump(mode="json")}}),
             ("POST", "/api/v1/jobs", {"json": {"code": "AAAA"}}),
             ("GET", "/api/v1/jobs/0123abcd", {}),
             ("PUT", "/api/v1/permits/P-1", {"json": {"document": "x" * 20}}),
             ("PUT", "/api/v1/suspensions", {"json": {"epoch": 0, "users": []}}),
             ("GET", "/api/v1/audit", {}),
             ("GET", "/health", {})]
    assert calls
    with client(node_servers, "site-a", "site-b") as compromised:
        for method, path, kw in calls:
            with pytest.raises(REFUSED_AT_TLS):
                compromised.request(method, path, headers=hdab, **kw)
    # The operator of site-a, with site-a's own certificate, reads its summary.
    with client(node_servers, "site-a", "site-a") as operator:
        resp = operator.get("/api/v1/index/summary", headers=hdab)
        assert resp.status_code == 200, resp.text
        assert resp.json()["counts"]["patients"] > 0


def test_a_node_door_checks_the_certificate_even_if_tls_let_another_node_in(
        node_servers, issuer, tmp_path):
    """A server set up to admit site-b at the handshake (not what `spe serve` does): the
    door still refuses it by the certificate's fingerprint, and records why."""
    settings = node_servers.settings
    app = create_node_app(NodeConfig("site-a", "site-a",
                                     f"sqlite:///{node_servers.dbs['site-a']}"), settings)
    sock = bind()
    loose = server_ssl_options(node_servers.pki, "site-a", clients=["hub", "site-a", "site-b"])
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    hdab = bearer(issuer, "hilde", "hdab", "admin")
    with serve(app, sock, lifespan="off", **loose), \
            httpx.Client(base_url=url, timeout=10,
                         verify=client_ssl_context(node_servers.pki, "site-b")) as other:
        summary = other.get("/api/v1/index/summary", headers=hdab)
        assert summary.status_code == 403
        assert "operator's certificate only" in summary.json()["detail"]
        query = other.post("/api/v1/query", json={"query": QUERY.model_dump(mode="json")},
                           headers={"X-SPE-Hub-Context": context(
                               node_servers, "site-a", QUERY.digest())})
        assert query.status_code == 403
        assert "hub's certificate only" in query.json()["detail"]
        assert "counts" not in summary.text
    refused = audit(node_servers, "site-a", "action = 'door' AND decision = 'deny'")
    assert {r[2] for r in refused} >= {"GET /api/v1/index/summary", "POST /api/v1/query"}


def test_the_hubs_certificate_does_not_open_the_operators_routes(node_servers, issuer):
    hdab = bearer(issuer, "hilde", "hdab", "admin")
    with client(node_servers, "site-a", "hub") as hub:
        for path in ("/api/v1/index/summary", "/api/v1/audit"):
            resp = hub.get(path, headers=hdab)
            assert resp.status_code == 403, path
            assert "operator's certificate only" in resp.json()["detail"]
        # What the central catalogue harvests, it still harvests (small counts suppressed).
        assert hub.get("/api/v1/descriptors", headers=hdab).status_code == 200


def test_the_operators_certificate_does_not_pass_for_the_hub(node_servers):
    """site-a's own certificate with a context signed by the hub (captured, say): the
    hub's routes take the hub's certificate only."""
    with client(node_servers, "site-a", "site-a") as operator:
        resp = operator.post("/api/v1/query", json={"query": QUERY.model_dump(mode="json")},
                             headers={"X-SPE-Hub-Context": context(
                                 node_servers, "site-a", QUERY.digest())})
    assert resp.status_code == 403
    assert "hub's certificate only" in resp.json()["detail"]


# -- a captured context -----------------------------------------------------------------


def test_a_captured_hub_context_is_answered_once(node_servers):
    body = {"query": QUERY.model_dump(mode="json")}
    captured = {"X-SPE-Hub-Context": context(node_servers, "site-a", QUERY.digest(),
                                             user=f"victor@{ISSUER}")}
    with client(node_servers, "site-a", "hub") as hub:
        assert hub.post("/api/v1/query", json=body, headers=captured).status_code == 200
        replay = hub.post("/api/v1/query", json=body, headers=captured)
    assert replay.status_code == 409
    assert replay.json() == {"error": "context_replayed",
                             "detail": "hub context already used: each is answered once"}
    (entry,) = audit(node_servers, "site-a",
                     f"actor = 'victor@{ISSUER}' AND action = 'query' AND decision = 'deny'")
    assert "already used" in entry[4]


def test_a_replay_is_refused_by_another_process_of_the_same_node(node_servers):
    """Two servers of site-a over one database (two workers of a node): a context answered
    by one is refused by the other."""
    second = bind()
    app = create_node_app(NodeConfig("site-a", "site-a",
                                     f"sqlite:///{node_servers.dbs['site-a']}"),
                          node_servers.settings)
    body = {"query": QUERY.model_dump(mode="json")}
    captured = {"X-SPE-Hub-Context": context(node_servers, "site-a", QUERY.digest())}
    with serve(app, second, lifespan="off",
               **server_ssl_options(node_servers.pki, "site-a")), \
            httpx.Client(base_url=f"https://127.0.0.1:{second.getsockname()[1]}", timeout=10,
                         verify=client_ssl_context(node_servers.pki, "hub")) as other, \
            client(node_servers, "site-a", "hub") as first:
        assert first.post("/api/v1/query", json=body, headers=captured).status_code == 200
        assert other.post("/api/v1/query", json=body, headers=captured).status_code == 409


def test_a_captured_job_context_is_answered_once(node_servers):
    """A job status read (the hub signs one per call): the second use is refused before
    the node looks for the job."""
    import hashlib

    job = "0123456789abcdef"
    captured = {"X-SPE-Hub-Context": context(
        node_servers, "site-b", hashlib.sha256(job.encode()).hexdigest(), tier="permit",
        permit="P-1")}
    with client(node_servers, "site-b", "hub") as hub:
        assert hub.get(f"/api/v1/jobs/{job}", headers=captured).status_code == 404
        replay = hub.get(f"/api/v1/jobs/{job}", headers=captured)
    assert replay.status_code == 409
    assert replay.json()["error"] == "context_replayed"


# -- a suspended user -------------------------------------------------------------------


@pytest.fixture
def central(node_servers, tmp_path):
    central_db = f"sqlite:///{tmp_path / 'central.db'}"
    catalogued_central(central_db, SITES, patients=40)
    app = create_central_app(node_servers.settings.model_copy(update={
        "database_url": central_db, "federation_nodes": node_servers.urls}))
    with TestClient(app) as hub:
        yield hub


def _uid(central, issuer, user: str) -> int:
    users = central.get("/api/v1/users", headers=bearer(issuer, "root", "admin")).json()
    return next(u["id"] for u in users if u["subject"] == user)


def test_a_suspended_user_is_refused_at_the_centre_and_at_every_node(central, issuer,
                                                                      node_servers):
    mallory = bearer(issuer, "mallory", "researcher")
    asked = central.post("/api/v1/query", json={"where": FEMALE}, headers=mallory)
    assert asked.status_code == 200
    assert {n["status"] for n in asked.json()["nodes"]} <= {"answered", "suppressed"}
    # A context the hub signed before the suspension, not yet used.
    early = context(node_servers, "site-a", QUERY.digest(), user=f"mallory@{ISSUER}")

    admin = bearer(issuer, "root", "admin")
    uid = _uid(central, issuer, "mallory")
    done = central.put(f"/api/v1/users/{uid}/suspension",
                       json={"suspended": True, "reason": "credentials leaked"},
                       headers=admin)
    assert done.status_code == 200, done.text
    assert done.json()["user"] == f"mallory@{ISSUER}"
    assert done.json()["nodes"] == dict.fromkeys(SITES, "delivered")

    refused = central.post("/api/v1/query", json={"where": FEMALE}, headers=mallory)
    assert refused.status_code == 403
    assert refused.json() == {"error": "user_suspended",
                              "detail": f"mallory@{ISSUER} is suspended"}
    assert central.get("/api/v1/me", headers=mallory).status_code == 403
    # The hub signs nothing for them, whoever asks it to.
    from spe.errors import Forbidden

    with pytest.raises(Forbidden, match="suspended"):
        central.app.state.hub.signer.sign(
            user=f"mallory@{ISSUER}", roles=["researcher"], tier="statistics",
            query_hash=QUERY.digest(), node_id="site-a")
    with pytest.raises(Forbidden, match="suspended"):  # the federated query's batch too
        central.app.state.hub.signer.sign_each(
            list(SITES), user=f"mallory@{ISSUER}", roles=["researcher"],
            tier="statistics", query_hash=QUERY.digest())

    with client(node_servers, "site-a", "hub") as hub:
        resp = hub.post("/api/v1/query", json={"query": QUERY.model_dump(mode="json")},
                        headers={"X-SPE-Hub-Context": early})
    assert resp.status_code == 403
    assert resp.json()["error"] == "user_suspended"
    assert audit(node_servers, "site-a", "actor = 'mallory@http://central.test' AND "
                                         "decision = 'deny' AND reason LIKE '%suspended%'")
    # Others are served as before; reinstated, mallory is too.
    assert central.post("/api/v1/query", json={"where": FEMALE},
                        headers=bearer(issuer, "dave", "researcher")).status_code == 200
    back = central.put(f"/api/v1/users/{uid}/suspension",
                       json={"suspended": False, "reason": "new credentials"}, headers=admin)
    assert back.json()["nodes"] == dict.fromkeys(SITES, "delivered")
    again = central.post("/api/v1/query", json={"where": FEMALE}, headers=mallory)
    assert again.status_code == 200
    assert {n["status"] for n in again.json()["nodes"]} <= {"answered", "suppressed"}


def test_a_node_that_missed_the_suspension_refuses_newer_contexts(central, issuer,
                                                                  node_servers):
    """site-c is down while a user is suspended: once back, it refuses every context
    signed under the newer list instead of trusting the list it has."""
    bearer_dave = bearer(issuer, "dave", "researcher")
    assert central.post("/api/v1/query", json={"where": FEMALE},
                        headers=bearer(issuer, "trudy", "researcher")).status_code == 200
    node_servers.running["site-c"].stop()
    done = central.put(f"/api/v1/users/{_uid(central, issuer, 'trudy')}/suspension",
                       json={"suspended": True, "reason": "x"},
                       headers=bearer(issuer, "root", "admin"))
    assert done.json()["nodes"]["site-c"].startswith("unreachable")
    app = create_node_app(NodeConfig("site-c", "site-c",
                                     f"sqlite:///{node_servers.dbs['site-c']}"),
                          node_servers.settings)
    sock = bind()
    with serve(app, sock, lifespan="off", **server_ssl_options(node_servers.pki, "site-c")), \
            httpx.Client(base_url=f"https://127.0.0.1:{sock.getsockname()[1]}", timeout=10,
                         verify=client_ssl_context(node_servers.pki, "hub")) as hub:
        signer = central.app.state.hub.signer  # as the hub signs now: the newer epoch
        stale = hub.post("/api/v1/query", json={"query": QUERY.model_dump(mode="json")},
                         headers={"X-SPE-Hub-Context": signer.sign(
                             user=f"dave@{ISSUER}", roles=["researcher"], tier="statistics",
                             query_hash=QUERY.digest(), node_id="site-c")})
        assert stale.status_code == 409
        assert "older than the hub's" in stale.json()["detail"]
        # The hub's next round pushes the list to the nodes behind it, site-c only.
        # (site-c is back at another address: the membership the hub reads names it there)
        membership = central.app.state.hub.fanout.membership
        membership.configured["site-c"] = str(hub.base_url).rstrip("/")
        membership.invalidate()
        pusher = central.app.state.suspension_push
        caught_up = central.portal.call(functools.partial(
            pusher.push, pusher.current(), only_behind=True))
        assert caught_up == {"site-c": "delivered"}
        fresh = hub.post("/api/v1/query", json={"query": QUERY.model_dump(mode="json")},
                         headers={"X-SPE-Hub-Context": signer.sign(
                             user=f"dave@{ISSUER}", roles=["researcher"], tier="statistics",
                             query_hash=QUERY.digest(), node_id="site-c")})
        assert fresh.status_code == 200, fresh.text
    assert central.post("/api/v1/query", json={"where": FEMALE},
                        headers=bearer_dave).status_code == 200


def test_spe_users_suspend_over_the_api(node_servers, issuer, tmp_path):
    """The CLI against the central app under uvicorn: suspend, and the nodes are told."""
    central_db = f"sqlite:///{tmp_path / 'central.db'}"
    catalogued_central(central_db, SITES, patients=40)
    app = create_central_app(node_servers.settings.model_copy(update={
        "database_url": central_db, "federation_nodes": node_servers.urls}))
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    admin = issuer.mint("root", ["admin"])
    with serve(app, sock):
        assert httpx.get(f"{url}/api/v1/me", headers=bearer(issuer, "erin", "researcher"),
                         timeout=10).status_code == 200
        runner = CliRunner()
        listed = runner.invoke(cli, ["users", "list", "--hub", url, "--token", admin])
        assert listed.exit_code == 0, listed.output
        uid = next(line.split("\t")[0] for line in listed.output.splitlines()
                   if f"erin@{ISSUER}" in line)
        no_reason = runner.invoke(cli, ["users", "suspend", uid, "--hub", url,
                                        "--token", admin])
        assert no_reason.exit_code == 2
        done = runner.invoke(cli, ["users", "suspend", uid, "--reason", "left the project",
                                   "--hub", url, "--token", admin])
        assert done.exit_code == 0, done.output
        assert '"suspended": true' in done.output
        assert httpx.get(f"{url}/api/v1/me", headers=bearer(issuer, "erin", "researcher"),
                         timeout=10).status_code == 403
    with sqlite3.connect(node_servers.dbs["site-b"]) as conn:
        (users,) = conn.execute("SELECT users FROM suspension_list").fetchone()
    assert f"erin@{ISSUER}" in users


def test_a_permit_push_without_the_hubs_context_is_refused(node_servers):
    """A permit document alone (even the hub's, captured) no longer passes: the push needs
    the hub's certificate and a context naming the document."""
    with client(node_servers, "site-a", "hub") as hub:
        bare = hub.put("/api/v1/permits/P-1", json={"document": "x" * 20})
        assert bare.status_code == 401
        named = hub.put("/api/v1/permits/P-1", json={"document": "x" * 20},
                        headers={"X-SPE-Hub-Context": context(
                            node_servers, "site-a", document_hash("y" * 20),
                            user="hub", roles=["hub"], tier="permit")})
        assert named.status_code == 401
        assert named.json()["detail"] == "hub context names another query"
