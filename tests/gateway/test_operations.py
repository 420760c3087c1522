"""Watching a running federation as its operator does: /health, /ready and /metrics of a
central service and a node under uvicorn (the node over mutual TLS), each reporting an
identity provider whose keys stop answering and a node audit table edited behind its
back; and one request id in the log lines of a federated query at the hub and at every
node."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from spe.app import create_central_app
from spe.db.migrate import upgrade
from spe.identity import DemoIssuer
from spe.observability.logging import log_handler
from spe.pki import client_ssl_context, server_ssl_options
from spe.settings import Settings
from tests.gateway.conftest import ISSUER, RARE, SITES, NodeServers
from tests.servers import Running, bind, serve

SCRAPER = "prometheus-scrape-token-0123456789"
SCRAPE = {"Authorization": f"Bearer {SCRAPER}"}


@dataclass
class Watched:
    central: httpx.Client
    node: httpx.Client  # with the node operator's certificate
    jwks: Running
    issuer: DemoIssuer
    node_db: Path
    tmp: Path

    def ready(self, client: httpx.Client) -> tuple[int, dict]:
        resp = client.get("/ready")
        return resp.status_code, resp.json()

    def metrics(self, client: httpx.Client) -> str:
        resp = client.get("/metrics", headers=SCRAPE)
        assert resp.status_code == 200, resp.text
        return resp.text


def _jwks_app(issuer: DemoIssuer) -> FastAPI:
    """The identity provider's key endpoint, as a real HTTP server the test can stop."""
    app = FastAPI()
    app.get("/jwks")(issuer.jwks)
    return app


@pytest.fixture
def watched(pki, node_dbs, postgres_url, tmp_path) -> Iterator[Watched]:
    issuer = DemoIssuer(tmp_path / "idp" / "issuer.jwk.json", ISSUER, "spe")
    node_db = tmp_path / "site-a.db"  # a copy: its audit table is edited below
    shutil.copy(node_dbs["site-a"], node_db)
    synth = Path(node_dbs["site-a"]).parent / "synth" / "site-a"
    jwks_sock, node_sock, central_sock = bind(), bind(), bind()
    base = dict(oidc_issuer=ISSUER, oidc_jwks_url=f"http://127.0.0.1:"
                f"{jwks_sock.getsockname()[1]}/jwks", pki_dir=pki, environment="development",
                metrics_token=SCRAPER, ready_cache_seconds=0, node_workers=0)
    node_url = f"https://127.0.0.1:{node_sock.getsockname()[1]}"
    upgrade(postgres_url, "central")
    with ExitStack() as stack:
        jwks = stack.enter_context(serve(_jwks_app(issuer), jwks_sock, lifespan="off"))
        node_app = create_node_app(
            NodeConfig("site-a", "site-a", f"sqlite:///{node_db}",
                       dicom=f"folder:{synth / 'dicom'}", fhir=f"ndjson:{synth / 'fhir'}"),
            Settings(data_dir=tmp_path / "node", **base))
        stack.enter_context(serve(node_app, node_sock, lifespan="on",
                                  **server_ssl_options(pki, "site-a")))
        central_app = create_central_app(Settings(
            data_dir=tmp_path / "central", database_url=postgres_url,
            federation_nodes={"site-a": node_url}, query_timeout_seconds=5, **base))
        # The verifiers keep fetched keys 1 s here (300 s by default): /ready's grace for
        # a provider that stops answering (a warning first, then a failure).
        for app in (node_app, central_app):
            app.state.ctx.verifier.jwks.ttl = 1
        stack.enter_context(serve(central_app, central_sock, lifespan="on"))
        central = stack.enter_context(httpx.Client(
            base_url=f"http://127.0.0.1:{central_sock.getsockname()[1]}", timeout=10))
        node = stack.enter_context(httpx.Client(
            base_url=node_url, timeout=10, verify=client_ssl_context(pki, "site-a")))
        yield Watched(central, node, jwks, issuer, node_db, tmp_path)


def _value(metrics: str, series: str) -> float:
    """The value of one series (`name{labels}` exactly as exposed)."""
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in the metrics")


def _not_leaked(body: dict, *secrets: str) -> None:
    text = json.dumps(body)
    assert "Traceback" not in text
    for secret in secrets:
        assert secret not in text


def test_metrics_and_readiness_report_a_lost_identity_provider_and_an_edited_audit_chain(
        watched: Watched, caplog):
    caplog.set_level(logging.ERROR, logger="spe.audit")
    for client in (watched.central, watched.node):
        assert client.get("/health").json()["status"] == "ok"
    status, central = watched.ready(watched.central)
    assert status == 200, central
    assert set(central["checks"]) == {"database", "identity_provider", "policy",
                                      "audit_chain", "certificates"}
    status, node = watched.ready(watched.node)
    assert status == 200, node
    assert {"dicom_source", "fhir_source", "audit_chain", "identity_provider"} <= set(
        node["checks"])
    assert all(c["status"] == "ok" for c in node["checks"].values()), node

    # A researcher's federated query through the hub, then both services scraped.
    token = watched.issuer.mint("grace", ["researcher"])
    answer = watched.central.post("/api/v1/query", headers={"Authorization": f"Bearer {token}"},
                                  json={"where": {"type": "patient", "sex": "female"},
                                        "answer": {"kind": "count"}})
    assert answer.status_code == 200, answer.text
    outcome = answer.json()["nodes"][0]["status"]
    hub = watched.metrics(watched.central)
    assert _value(hub, f'spe_federated_query_node_results_total{{node="site-a",'
                       f'outcome="{outcome}"}}') == 1
    assert _value(hub, 'spe_http_request_duration_seconds_count{method="POST",'
                       'route="/api/v1/query",status="200"}') == 1
    assert _value(hub, "spe_ready") == 1
    assert _value(hub, 'spe_ready_check{check="identity_provider"}') == 1
    at_node = watched.metrics(watched.node)
    assert _value(at_node, 'spe_http_request_duration_seconds_count{method="POST",'
                           'route="/api/v1/query",status="200"}') == 1
    assert _value(at_node, "spe_audit_chain_length") >= 1
    assert _value(at_node, 'spe_certificate_days_left{certificate="site-a"}') > 30
    assert _value(at_node, 'spe_job_queue_depth{state="queued"}') == 0
    assert _value(at_node, "spe_audit_chain_broken") == 0

    # The identity provider's key endpoint stops answering (and the keys the services
    # fetched go stale: 1 s here).
    watched.jwks.stop()
    time.sleep(1.2)
    for client in (watched.central, watched.node):
        status, body = watched.ready(client)
        assert status == 503
        assert body["status"] == "not ready"
        assert body["checks"]["identity_provider"]["status"] == "failed"
        assert "SPE_OIDC_JWKS_URL" in body["checks"]["identity_provider"]["reason"]
        assert body["checks"]["database"]["status"] == "ok"  # the others still hold
        _not_leaked(body, token, str(watched.tmp), "127.0.0.1")
        metrics = watched.metrics(client)
        assert _value(metrics, 'spe_ready_check{check="identity_provider"}') == 0
        assert _value(metrics, "spe_ready") == 0

    # An entry of the node's audit table is edited behind the service's back.
    with sqlite3.connect(watched.node_db) as conn:
        assert conn.execute("UPDATE audit_log SET reason = 'nothing to see' "
                            "WHERE seq = 2").rowcount == 1
    status, body = watched.ready(watched.node)
    assert status == 503
    assert body["checks"]["audit_chain"]["status"] == "failed"
    assert not re.search(r"entry \d", json.dumps(body))  # which one: the log's, not public
    at_node = watched.metrics(watched.node)
    assert _value(at_node, "spe_audit_chain_broken") == 1
    assert _value(at_node, 'spe_ready_check{check="audit_chain"}') == 0
    assert any("AUDIT CHAIN BROKEN at entry 2" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)
    # The centre's own chain is untouched.
    assert watched.ready(watched.central)[1]["checks"]["audit_chain"]["status"] == "ok"


def test_a_node_refuses_a_scrape_without_the_token_even_with_a_certificate(watched):
    assert watched.node.get("/metrics").status_code == 401
    assert watched.node.get("/metrics",
                            headers={"Authorization": "Bearer guess"}).status_code == 401


# -- one request id from the hub to every node ------------------------------------------------

@pytest.fixture
def json_lines():
    stream = io.StringIO()
    handler = log_handler("json", stream)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


@pytest.mark.parametrize("given", ["lb-4f1c2a9e-0001", None])
def test_a_federated_querys_log_lines_carry_one_request_id_at_the_hub_and_each_node(
        node_servers: NodeServers, tmp_path, json_lines, given):
    settings = node_servers.settings
    central_db = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(central_db, "central")
    central = create_central_app(settings.model_copy(update={
        "database_url": central_db, "federation_nodes": node_servers.urls}))
    token = DemoIssuer(settings.issuer_key_path, ISSUER, "spe").mint("grace", ["researcher"])
    headers = {"Authorization": f"Bearer {token}", **({"X-Request-ID": given} if given else {})}
    with TestClient(central) as hub:
        resp = hub.post("/api/v1/query", headers=headers, json={
            "where": {"type": "condition", "system": "icd-10", "code": RARE},
            "answer": {"kind": "count"}})
    assert resp.status_code == 200, resp.text
    rid = resp.headers["x-request-id"]
    if given:
        assert rid == given
    lines = json_lines()
    access = [e for e in lines if e["logger"] == "spe.access" and e["route"] == "/api/v1/query"]
    at_hub = [e for e in access if e["service"] == "central"]
    assert [(e["request_id"], e["user"], e["status"]) for e in at_hub] == [(rid, "grace", 200)]
    at_nodes = {e["instance"]: e for e in access if e["service"] == "node"}
    assert sorted(at_nodes) == sorted(SITES)
    for site, line in at_nodes.items():
        assert line["request_id"] == rid, site
        assert line["user"].startswith("grace")  # the user the hub vouched for
    # The query's criteria (a rare code: about a person) and the token are in no line.
    everything = json.dumps(lines)
    assert RARE not in everything
    assert token not in everything
