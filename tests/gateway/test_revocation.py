"""Revocation, enforced at once and from outside: real TLS handshakes against uvicorn
servers, the hub's own client code, a real node app taking the hub's push of the CA's
revocation list, and the central API's federated query. Nothing is restarted."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.hub.crl_push import CrlPusher
from gateway.hub.fanout import Fanout, push
from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.cli.main import app as cli
from spe.db.migrate import upgrade
from spe.identity import DemoIssuer
from spe.pki import ClientTLS, init_pki, private_key_of, server_ssl_options
from spe.pki.revocation import CRL_FILE, accept_crl, revoke
from spe.settings import Settings
from spe.wire.context import ContextSigner
from spe.wire.revocation import CRL_PATH, CrlPush
from tests.central import catalogued_central
from tests.gateway.conftest import ISSUER, SITES
from tests.pki_federation import Federation, client_context, enrol_federation
from tests.servers import bind, serve

runner = CliRunner()
# A client certificate refused after the handshake: under TLS 1.3 the client's side of the
# handshake is complete when the server checks it, so the drop is seen on the first read.
REFUSED = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)
TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.fixture
def fed(tmp_path) -> Federation:
    return enrol_federation(tmp_path / "fed")


def _ping_app() -> FastAPI:
    app = FastAPI()
    app.get("/ping")(lambda: {"pong": True})
    app.put("/api/v1/anything")(lambda: {"ok": True})
    return app


def _serial(cert: Path) -> str:
    from cryptography import x509

    return f"{x509.load_pem_x509_certificate(cert.read_bytes()).serial_number:x}"


def _raw_exchange(port: int, ctx: ssl.SSLContext) -> bytes:
    """A TLS handshake and one HTTP request over a plain socket: what any client does."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := tls.recv(4096):
            out += chunk
        return out


# -- a node's TLS server ----------------------------------------------------------------------


@pytest.mark.parametrize("tls", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize("peer", ["hub", "site-a"])  # the hub, the node's own operator
def test_a_node_server_refuses_a_revoked_certificate_at_once(fed, peer, tls):
    node = fed.node("site-a")
    peer_dir = fed.ca if peer == "hub" else node
    ctx = client_context(peer_dir, peer, tls)
    sock = bind()
    port = sock.getsockname()[1]
    with serve(_ping_app(), sock, lifespan="off", **server_ssl_options(node, "site-a")):
        url = f"https://localhost:{port}/ping"
        kept = httpx.Client(verify=ctx, timeout=5)  # a connection kept alive across it
        assert kept.get(url).json() == {"pong": True}
        assert b"200 OK" in _raw_exchange(port, ctx)

        revoke(fed.ca, str(peer_dir / f"{peer}.crt"), reason="key-compromise")
        # What the hub's push does at the node: the CA's list, checked and kept.
        assert accept_crl(node, (fed.ca / CRL_FILE).read_bytes())[0] == "stored"

        with pytest.raises(REFUSED):
            kept.get(url)  # the open connection: dropped before its next request
        kept.close()
        with pytest.raises(REFUSED), httpx.Client(verify=ctx, timeout=5) as fresh:
            fresh.get(url)
        try:
            answer = _raw_exchange(port, ctx)
        except (ssl.SSLError, OSError):
            answer = b""
        assert answer == b""  # no answer at all, not even an HTTP error
        # The other pinned peer is still served (a revocation list, not an outage).
        other = "site-a" if peer == "hub" else "hub"
        other_ctx = client_context(node if other == "site-a" else fed.ca, other, tls)
        with httpx.Client(verify=other_ctx, timeout=5) as client:
            assert client.get(url).json() == {"pong": True}


def test_a_node_refuses_every_peer_while_its_revocation_list_is_damaged(fed):
    node = fed.node("site-a")
    sock = bind()
    with serve(_ping_app(), sock, lifespan="off", **server_ssl_options(node, "site-a")):
        url = f"https://localhost:{sock.getsockname()[1]}/ping"
        (node / CRL_FILE).write_bytes(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
        with pytest.raises(REFUSED), httpx.Client(verify=client_context(fed.ca, "hub")) as c:
            c.get(url)  # fail closed


# -- the hub's calls --------------------------------------------------------------------------


def test_the_hub_stops_calling_a_revoked_node_at_once(fed):
    signer = ContextSigner(private_key_of(fed.ca / "hub.key"))
    socks = {site: bind() for site in fed.nodes}
    urls = {site: f"https://localhost:{s.getsockname()[1]}" for site, s in socks.items()}
    fanout = Fanout(urls, timeout=5, tls=ClientTLS(fed.ca, "hub"))

    async def both() -> dict[str, str]:
        return await push(fanout, signer, list(urls), "/api/v1/anything", {}, "x")

    async def run() -> tuple[dict, dict]:
        before = await both()  # connections pooled to both nodes
        revoke(fed.ca, str(fed.transfer / "site-a.crt"), reason="affiliation-changed")
        after = await both()
        await fanout.aclose()
        return before, after

    with serve(_ping_app(), socks["site-a"], lifespan="off",
               **server_ssl_options(fed.node("site-a"), "site-a")), \
            serve(_ping_app(), socks["site-b"], lifespan="off",
                  **server_ssl_options(fed.node("site-b"), "site-b")):
        before, after = asyncio.run(run())
    assert before == {"site-a": "delivered", "site-b": "delivered"}
    assert after["site-b"] == "delivered"
    assert after["site-a"].startswith("unreachable")  # not even the pooled connection


# -- the hub pushes the list; a real node keeps only the CA's, newer ones ---------------------


@pytest.fixture
def node_a(fed, tmp_path) -> Iterator[str]:
    """site-a's real node app (its own database and PKI folder) under mutual TLS."""
    db = f"sqlite:///{tmp_path / 'site-a.db'}"
    upgrade(db, "node")
    settings = Settings(data_dir=tmp_path / "node-a", oidc_issuer=ISSUER,
                        pki_dir=fed.node("site-a"), environment="development")
    app = create_node_app(NodeConfig("site-a", "site-a", db), settings)
    sock = bind()
    with serve(app, sock, lifespan="off", **server_ssl_options(fed.node("site-a"), "site-a")):
        yield f"https://localhost:{sock.getsockname()[1]}"


def _audited(tmp_path: Path, action: str) -> list[tuple]:
    with sqlite3.connect(tmp_path / "site-a.db") as conn:
        return conn.execute("SELECT actor, decision, object FROM audit_log WHERE action = ?",
                            (action,)).fetchall()


def test_the_hub_pushes_the_revocation_list_and_the_node_enforces_it(fed, node_a, tmp_path):
    signer = ContextSigner(private_key_of(fed.ca / "hub.key"))
    fanout = Fanout({"site-a": node_a}, timeout=5, tls=ClientTLS(fed.ca, "hub"))
    pusher = CrlPusher(fanout, signer, fed.ca)
    first = (fed.ca / CRL_FILE).read_text()  # init's (number 1), which the node lacks

    async def run(*steps):
        out = [await step() for step in steps]
        await fanout.aclose()
        return out

    [delivered] = asyncio.run(run(pusher.push_now))
    assert delivered == {"site-a": "delivered"}
    assert (fed.node("site-a") / CRL_FILE).read_text() == first

    # The hub's own certificate is revoked (its key leaked): its last push tells the node,
    # which refuses that certificate from the next connection on.
    revoke(fed.ca, _serial(fed.ca / "hub.crt"), reason="key-compromise")
    [pushed, again] = asyncio.run(run(pusher.push_now, pusher.push_now))
    assert pushed == {"site-a": "delivered"}
    assert (fed.node("site-a") / CRL_FILE).read_bytes() == (fed.ca / CRL_FILE).read_bytes()
    assert again["site-a"].startswith("unreachable")  # refused at the node's TLS server
    with pytest.raises(REFUSED), httpx.Client(verify=client_context(fed.ca, "hub")) as c:
        c.get(f"{node_a}/api/v1/health")
    assert [r[:2] for r in _audited(tmp_path, "crl.receive")] == [("hub", "allow")] * 2


def test_a_node_takes_no_forged_or_older_revocation_list(fed, node_a, tmp_path):
    signer = ContextSigner(private_key_of(fed.ca / "hub.key"))
    fanout = Fanout({"site-a": node_a}, timeout=5, tls=ClientTLS(fed.ca, "hub"))
    older = (fed.ca / CRL_FILE).read_text()
    revoke(fed.ca, str(fed.transfer / "site-b.crt"), reason="cessation-of-operation")
    current = (fed.ca / CRL_FILE).read_text()
    forger = tmp_path / "forger"
    init_pki(forger, nodes=[])  # another CA: its list names nobody of ours, revokes nothing
    forged = (forger / CRL_FILE).read_text()

    async def send(pem: str) -> str:
        body = CrlPush(crl=pem)
        return (await push(fanout, signer, ["site-a"], CRL_PATH, body.model_dump(),
                           body.digest()))["site-a"]

    async def run() -> list[str]:
        out = [await send(current), await send(older), await send(forged),
               await send("not a list")]
        await fanout.aclose()
        return out

    stored, old, fake, junk = asyncio.run(run())
    assert stored == "delivered"
    assert old.startswith("refused: HTTP 409")
    assert "newer revocation list" in old
    assert fake.startswith("refused: HTTP 422")
    assert "not signed by the federation CA" in fake
    assert junk.startswith("refused: HTTP 422")
    assert (fed.node("site-a") / CRL_FILE).read_text() == current  # kept its own
    assert sorted(r[1] for r in _audited(tmp_path, "crl.receive")) == ["allow", "deny",
                                                                      "deny"]


# -- from the central API: a researcher's federated query --------------------------------------


@pytest.fixture
def revocable(pki, node_dbs, tmp_path) -> Iterator[tuple[TestClient, Path, DemoIssuer]]:
    """site-a and site-b with a copy of the session's PKI (revoking changes it), and the
    central app whose hub asks them."""
    own = tmp_path / "pki"
    shutil.copytree(pki, own)
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER, pki_dir=own,
                        environment="development")
    sites = SITES[:2]
    socks = {site: bind() for site in sites}
    urls = {site: f"https://127.0.0.1:{s.getsockname()[1]}" for site, s in socks.items()}
    central_db = f"sqlite:///{tmp_path / 'central.db'}"
    catalogued_central(central_db, sites, patients=40)
    with serve(create_node_app(NodeConfig("site-a", "site-a", f"sqlite:///{node_dbs['site-a']}"),
                               settings), socks["site-a"], lifespan="off",
               **server_ssl_options(own, "site-a")), \
            serve(create_node_app(NodeConfig("site-b", "site-b",
                                             f"sqlite:///{node_dbs['site-b']}"), settings),
                  socks["site-b"], lifespan="off", **server_ssl_options(own, "site-b")), \
            TestClient(create_central_app(settings.model_copy(update={
                "database_url": central_db, "federation_nodes": urls}))) as central:
        yield central, own, DemoIssuer(settings.issuer_key_path, ISSUER, "spe")


def test_a_revoked_nodes_answers_are_no_longer_asked_for(revocable):
    central, pki, issuer = revocable
    researcher = {"Authorization": f"Bearer {issuer.mint('dave', ['researcher'])}"}
    query = {"where": {"type": "patient", "sex": "female"}}
    asked = central.post("/api/v1/query", json=query, headers=researcher)
    assert asked.status_code == 200, asked.text
    status = {n["node_id"]: n["status"] for n in asked.json()["nodes"]}
    assert set(status.values()) <= {"answered", "suppressed"}
    assert set(status) == {"site-a", "site-b"}

    result = runner.invoke(cli, ["pki", "revoke", str(pki / "site-a.crt"), "--ca", str(pki),
                                 "--reason", "key-compromise"])
    assert result.exit_code == 0, result.output

    again = central.post("/api/v1/query", json=query, headers=researcher)
    assert again.status_code == 200, again.text
    nodes = {n["node_id"]: n for n in again.json()["nodes"]}
    assert nodes["site-a"]["status"] == "unreachable"
    assert "answer" not in nodes["site-a"] or nodes["site-a"]["answer"] is None
    assert nodes["site-b"]["status"] in {"answered", "suppressed"}
