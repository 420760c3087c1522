"""A node's /ready says when its index was last synced (and whether that sync skipped bad
files), and warns when it never was."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from gateway.node.service import run_sync
from spe.db.migrate import upgrade
from spe.settings import Settings
from spe.synth import generate


def _ready(tmp_path, url: str) -> dict:
    settings = Settings(data_dir=tmp_path, oidc_issuer="http://central")
    app = create_node_app(NodeConfig("site-a", "site-a", url), settings)
    with TestClient(app) as client:
        return client.get("/ready").json()


def test_ready_warns_until_the_node_is_synced_then_says_when(tmp_path):
    url = f"sqlite:///{tmp_path / 'node.db'}"
    upgrade(url, "node")
    never = _ready(tmp_path, url)["checks"]["index"]
    assert never == {"status": "warn", "reason": "never synced: run `spe node sync`"}

    generate(tmp_path / "synth", institutions=1, patients=3, seed=2)
    dicom = tmp_path / "synth" / "site-a" / "dicom"
    (dicom / "broken.dcm").write_bytes(b"not DICOM")
    run_sync(url, dicom=f"folder:{dicom}", fhir=f"ndjson:{tmp_path / 'synth' / 'site-a' / 'fhir'}")
    synced = _ready(tmp_path, url)["checks"]["index"]
    assert synced["status"] == "ok"
    assert synced["reason"].startswith("last synced 20")
    assert synced["reason"].endswith("; it skipped bad files or lines (see `spe node sync`'s "
                                     "report)")
