"""Gateway fixtures: one real Orthanc for the whole session (see `tests/orthanc.py`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from gateway.node.orthanc_process import OrthancProcess
from gateway.node.service import run_sync
from spe.pki import init_pki, server_ssl_options
from spe.settings import Settings
from spe.synth import generate
from tests.orthanc import orthanc_server
from tests.servers import Running, bind, serve

#: The demo issuer's URL in federation tests (tokens name it; nothing is served there).
ISSUER = "http://central.test"
SITES = ("site-a", "site-b", "site-c")
RARE = "Z99.8"  # a code only the three patients added to site-a carry


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    """A running Orthanc shared by the session's tests.

    Skipped if Orthanc or its DICOMweb plugin (Debian packages orthanc orthanc-dicomweb) is
    not installed, failed instead when `CI` is set to a true value (see `tests/orthanc.py`).

    Tests upload their own files and look only at their own UIDs, since others may have
    uploaded theirs to the same server.
    """
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pki") / "federation"
    init_pki(out, nodes=list(SITES))
    return out


@pytest.fixture(scope="session")
def node_dbs(tmp_path_factory) -> dict[str, Path]:
    """Three synthetic institutions of 40 patients, indexed; site-a gets three more
    women with a code nobody else has."""
    root = tmp_path_factory.mktemp("federation-nodes")
    generate(root / "synth", institutions=3, patients=40, seed=21)
    dbs = {}
    for site in SITES:
        db = root / f"{site}.db"
        run_sync(f"sqlite:///{db}", dicom=f"folder:{root / 'synth' / site / 'dicom'}",
                 fhir=f"ndjson:{root / 'synth' / site / 'fhir'}")
        dbs[site] = db
    with sqlite3.connect(dbs["site-a"]) as conn:
        for i in range(3):
            cur = conn.execute("INSERT INTO patients (patient_key, sex, birth_date) "
                               "VALUES (?, 'female', '1970-05-05')", (f"rare-{i}",))
            conn.execute("INSERT INTO conditions (patient_id, system, code) VALUES "
                         "(?, 'http://hl7.org/fhir/sid/icd-10', ?)", (cur.lastrowid, RARE))
    return dbs


@dataclass
class NodeServers:
    settings: Settings  # the nodes' settings; a central app built from them shares the PKI
    pki: Path
    urls: dict[str, str]  # site -> https URL
    running: dict[str, Running]  # .stop() one to take it down mid-test
    dbs: dict[str, Path]


@pytest.fixture
def node_servers(pki, node_dbs, tmp_path) -> Iterator[NodeServers]:
    """The three nodes under uvicorn, each on its own loopback port with mutual TLS."""
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER, pki_dir=pki,
                        environment="development")
    socks = {site: bind() for site in SITES}
    urls = {site: f"https://127.0.0.1:{s.getsockname()[1]}" for site, s in socks.items()}
    running: dict[str, Running] = {}
    stack = []
    try:
        for site in SITES:
            app = create_node_app(NodeConfig(site, site, f"sqlite:///{node_dbs[site]}"),
                                  settings)
            cm = serve(app, socks[site], lifespan="off", **server_ssl_options(pki, site))
            running[site] = cm.__enter__()
            stack.append(cm)
        yield NodeServers(settings, pki, urls, running, node_dbs)
    finally:
        for cm in reversed(stack):
            cm.__exit__(None, None, None)


def serve_job_federation(stack: ExitStack, settings: Settings, dbs: dict[str, Path],
                         node_settings: dict[str, Settings] | None = None,
                         options: dict[str, dict] | None = None
                         ) -> tuple[str, dict[str, str]]:
    """The three nodes under uvicorn with mutual TLS over the synthetic stores beside their
    databases, each with its job worker (their lifespan), and a central database whose
    catalogue lists them; returns (central database URL, site -> node URL).
    `node_settings`: a site's own settings instead of `settings` (its policies, say);
    `options`: more NodeConfig fields per site (its code review, say)."""
    from tests.central import catalogued_central

    socks = {site: bind() for site in SITES}
    urls = {site: f"https://127.0.0.1:{s.getsockname()[1]}" for site, s in socks.items()}
    for site in SITES:
        synth = Path(dbs[site]).parent / "synth" / site
        config = NodeConfig(site, site, f"sqlite:///{dbs[site]}",
                            dicom=f"folder:{synth / 'dicom'}", fhir=f"ndjson:{synth / 'fhir'}",
                            **(options or {}).get(site, {}))
        own = (node_settings or {}).get(site, settings)
        stack.enter_context(serve(create_node_app(config, own), socks[site],
                                  lifespan="on", **server_ssl_options(settings.pki_dir, site)))
    central_db = f"sqlite:///{settings.data_dir / 'central.db'}"
    catalogued_central(central_db, SITES, patients=40)
    return central_db, urls
