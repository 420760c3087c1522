"""Catalogue fixtures: two synthetic nodes (synced once per session), a central database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from gateway.node.service import run_sync
from spe.db.migrate import upgrade
from spe.identity import DemoIssuer
from spe.settings import Settings
from spe.synth import generate

ISSUER = "http://central"
PATIENTS = 60


@dataclass(frozen=True)
class SyncedNode:
    node_id: str
    name: str
    database_url: str
    db_path: Path


@pytest.fixture(scope="session")
def synced_nodes(tmp_path_factory: pytest.TempPathFactory) -> list[SyncedNode]:
    """Two institutions of PATIENTS synthetic patients each, indexed into SQLite node
    databases: enough that at least 10 patients lie beyond each end of an age range."""
    root = tmp_path_factory.mktemp("catalogue-nodes")
    summary = generate(root / "synth", institutions=2, patients=PATIENTS, seed=6)
    nodes = []
    for site in summary.institutions:
        db = root / f"{site.id}.db"
        url = f"sqlite:///{db}"
        run_sync(url, dicom=f"folder:{root / 'synth' / site.id / 'dicom'}",
                 fhir=f"ndjson:{root / 'synth' / site.id / 'fhir'}")
        nodes.append(SyncedNode(site.id, site.name, url, db))
    return nodes


@pytest.fixture
def node_clients(synced_nodes, tmp_path: Path) -> Iterator[tuple[dict, DemoIssuer]]:
    """{node URL: TestClient} for the two nodes, and the issuer their tokens come from."""
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER)
    clients = {}
    for node in synced_nodes:
        app = create_node_app(NodeConfig(node.node_id, node.name, node.database_url), settings)
        clients[f"http://{node.node_id}.test"] = TestClient(app,
                                                            base_url=f"http://{node.node_id}.test")
    issuer = DemoIssuer(settings.issuer_key_path, ISSUER, "spe")
    try:
        yield clients, issuer
    finally:
        for client in clients.values():
            client.close()


@pytest.fixture
def central_db(database_url: str) -> str:
    upgrade(database_url, "central")
    return database_url
