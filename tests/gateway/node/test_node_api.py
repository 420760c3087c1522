"""A node's API from the outside: tokens from the central issuer, its own Rego decision."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from gateway.node.sources.memory import MemoryFhirSource
from gateway.node.sync import sync_index
from spe.audit import NodeAuditEntry
from spe.db import session_scope
from spe.db.migrate import upgrade
from spe.identity import DemoIssuer
from spe.settings import Settings
from tests.gateway.node.test_sync import patient


@pytest.fixture
def node(tmp_path: Path, database_url: str):
    settings = Settings(data_dir=tmp_path, oidc_issuer="http://central")
    upgrade(database_url, "node")
    app = create_node_app(NodeConfig("site-a", "Site A", database_url), settings)
    with session_scope(app.state.ctx.sessions) as session:
        sync_index(session, dicom=None, fhir=MemoryFhirSource([patient("p1", "MRN1")]))
    issuer = DemoIssuer(settings.issuer_key_path, "http://central", "spe")
    with TestClient(app) as client:
        yield client, issuer, app.state.ctx


def test_node_health(node):
    client, _, _ = node
    assert client.get("/health").json()["name"] == "site-a"


def test_hdab_reads_the_index_summary(node):
    client, issuer, _ = node
    resp = client.get("/api/v1/index/summary",
                      headers={"Authorization": f"Bearer {issuer.mint('h', ['hdab'])}"})
    assert resp.status_code == 200
    assert resp.json()["counts"]["patients"] == 1


def test_researcher_is_refused_by_the_node_policy_and_audited(node):
    client, issuer, ctx = node
    resp = client.get("/api/v1/index/summary",
                      headers={"Authorization": f"Bearer {issuer.mint('a', ['researcher'])}"})
    assert resp.status_code == 403
    with ctx.sessions() as session:
        entry = session.execute(
            select(NodeAuditEntry).order_by(NodeAuditEntry.seq.desc()).limit(1)
        ).scalar_one()
    assert (entry.decision, entry.object) == ("deny", "GET /api/v1/index/summary")


def test_node_refuses_tokens_without_a_signature_it_knows(node, tmp_path: Path):
    client, _, _ = node
    stranger = DemoIssuer(tmp_path / "stranger.jwk", "http://central", "spe")
    resp = client.get("/api/v1/index/summary",
                      headers={"Authorization": f"Bearer {stranger.mint('h', ['hdab'])}"})
    assert resp.status_code == 401
