"""A federation for federated rounds: three nodes under uvicorn with mutual TLS over
synthetic sites (their DICOM folders and FHIR NDJSON), and the central app as the hub."""

from __future__ import annotations

import base64
import hashlib
import shutil
import time
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from spe.app import create_central_app
from spe.identity import DemoIssuer
from spe.pki import client_ssl_context, init_pki, private_key_of
from spe.settings import Settings
from spe.wire.code_archive import pack_code
from spe.wire.context import ContextSigner
from spe.wire.rounds import ROUNDS_PATH, RoundRequest
from tests.gateway.conftest import ISSUER, SITES, serve_job_federation

APPS = Path(__file__).resolve().parents[2] / "spe" / "federated" / "apps"
LIMITS = {"cpu_seconds": 120, "memory_mb": 2048, "processes": 64, "open_files": 256,
          "file_size_mb": 50, "output_mb": 50, "scratch_mb": 64, "wall_seconds": 120}
PATIENTS = 300


@pytest.fixture(scope="package")
def fed_sites(tmp_path_factory) -> dict[str, Path]:
    from gateway.node.service import run_sync
    from spe.synth import generate

    root = tmp_path_factory.mktemp("fed-sites")
    generate(root / "synth", institutions=3, patients=PATIENTS, seed=20)
    dbs = {}
    for site in SITES:
        dbs[site] = root / f"{site}.db"
        run_sync(f"sqlite:///{dbs[site]}", dicom=f"folder:{root / 'synth' / site / 'dicom'}",
                 fhir=f"ndjson:{root / 'synth' / site / 'fhir'}")
    return dbs


@pytest.fixture(scope="package")
def fed_pki(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fed-pki") / "federation"
    init_pki(out, nodes=list(SITES))
    return out


@pytest.fixture(scope="package")
def fed_federation(fed_pki, fed_sites, tmp_path_factory):
    """(hub client, node URLs, PKI folder, data folder)."""
    pki = fed_pki
    root = tmp_path_factory.mktemp("fed")
    settings = Settings(data_dir=root, oidc_issuer=ISSUER, pki_dir=pki,
                        environment="development", node_workers=0)
    with ExitStack() as stack:
        central_db, urls = serve_job_federation(stack, settings, fed_sites)
        app = create_central_app(settings.model_copy(update={
            "database_url": central_db, "federation_nodes": urls}))
        issuer = DemoIssuer(settings.issuer_key_path, ISSUER, "spe")
        client = stack.enter_context(TestClient(app))
        client.as_ = lambda user, role, inst=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}
        yield client, urls, pki, root


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def fed_central(request, fed_federation):
    """(hub client, node URLs, PKI folder, data folder, permit) of a central service over
    the same nodes whose database is SQLite or the real PostgreSQL, with a permit over
    the three sites for carol."""
    from tests.central import catalogued_central
    from tests.conftest import _fresh_postgres

    hub, urls, pki, root = fed_federation
    if request.param == "sqlite":
        yield hub, urls, pki, root, request.getfixturevalue("fed_permit")
        return
    settings = Settings(data_dir=root, oidc_issuer=ISSUER, pki_dir=pki,
                         environment="development", node_workers=0)
    with _fresh_postgres() as url, ExitStack() as stack:
        catalogued_central(url, SITES, patients=40)
        app = create_central_app(settings.model_copy(update={
            "database_url": url, "federation_nodes": urls}))
        issuer = DemoIssuer(settings.issuer_key_path, ISSUER, "spe")
        client = stack.enter_context(TestClient(app))
        client.as_ = lambda user, role, inst=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}
        yield client, urls, pki, root, issue_permit(client)


def issue_permit(hub, members=("carol",), sites=SITES) -> str:
    alice = hub.as_("alice", "researcher")
    body = {"organisation": "Uni", "title": "Harmonised imaging features", "summary": "s",
            "purpose": "scientific_research", "declaration": True,
            "start_date": str(date.today()),
            "end_date": str(date.today() + timedelta(days=90)),
            "members": [f"{m}@{ISSUER}" for m in members],
            "datasets": [f"{s}/imaging-and-clinical-records" for s in sites]}
    pid = hub.post("/api/v1/permits", json=body, headers=alice).json()["id"]
    hub.post(f"/api/v1/permits/{pid}/submit", headers=alice)
    for site in sites:
        resp = hub.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                        headers=hub.as_(f"approver-{site}", "approver", site))
        assert resp.status_code == 200, resp.text
    issued = hub.post(f"/api/v1/permits/{pid}/issue", json={"reason": "ok"},
                      headers=hub.as_("hilde", "hdab"))
    assert issued.status_code == 200, issued.text
    return pid


@pytest.fixture(scope="package")
def fed_permit(fed_federation) -> str:
    return issue_permit(fed_federation[0])


def step_code(tmp: Path, source: str) -> str:
    """base64 tar.gz of a step folder: `step.py` with `source`, and steplib.py."""
    folder = tmp / f"step-{time.monotonic_ns()}"
    folder.mkdir()
    (folder / "step.py").write_text(source)
    shutil.copy(APPS / "steplib.py", folder / "steplib.py")
    return base64.b64encode(pack_code(folder)).decode()


def send_round(fed, permit: str, body: RoundRequest, site: str = "site-a",
               user: str = "carol") -> httpx.Response:
    """A round straight to a node, as the hub sends it (signed with the hub's key)."""
    _, urls, pki, _ = fed
    context = ContextSigner(private_key_of(pki / "hub.key")).sign(
        query_hash=body.digest(), user=f"{user}@{ISSUER}", roles=["researcher"],
        tier="permit", node_id=site, permit=permit)
    with httpx.Client(base_url=urls[site], timeout=300,
                      verify=client_ssl_context(pki, "hub")) as client:
        return client.post(ROUNDS_PATH, json=body.model_dump(mode="json"),
                           headers={"X-SPE-Hub-Context": context})


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hub_audit(hub) -> list[dict]:
    """Every entry of the hub's audit log, read page by page as an admin."""
    entries, after = [], 0
    while True:
        page = hub.get("/api/v1/audit", params={"after": after, "limit": 1000},
                       headers=hub.as_("ada", "admin")).json()
        entries += page
        # Every read is itself audited: a short page is the end, not an empty one.
        if len(page) < 1000:
            return entries
        after = page[-1]["seq"]


@pytest.fixture(scope="package")
def task():
    """The example Flower app's task module (spe/federated/examples/flower_logreg)."""
    import sys

    from spe.settings import REPO_ROOT

    example = str(REPO_ROOT / "spe" / "federated" / "examples" / "flower_logreg")
    sys.path.insert(0, example)
    try:
        from flower_logreg import task
        yield task
    finally:
        sys.path.remove(example)
