"""The catalogue finds what people type, on the demo's own data: ICD-10 titles and clinical
areas, SNOMED CT and LOINC displays carried from the nodes' records, modality and body-part
names. And the displays a node publishes are held by at least its threshold of patients,
like every count it publishes.

The demo's data is made as `spe demo` makes it (3 institutions x 300 patients, seed 1),
synced into node indexes and harvested as the demo harvests (spe.cli.demo.fill_catalogue).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from gateway.node.app import create_node_app
from gateway.node.config import NodeConfig
from gateway.node.service import run_sync
from spe.app import create_central_app
from spe.cli.demo import fill_catalogue
from spe.identity import DemoIssuer
from spe.settings import Settings
from spe.synth import generate
from tests.catalogue.conftest import ISSUER

SEARCH = "/api/v1/catalogue/search"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


@pytest.fixture(scope="session")
def demo_nodes(tmp_path_factory: pytest.TempPathFactory) -> list[SimpleNamespace]:
    """The demo's three institutions (300 patients each, seed 1), synced."""
    root = tmp_path_factory.mktemp("demo-nodes")
    summary = generate(root / "synth", institutions=3, patients=300, seed=1)
    nodes = []
    for site in summary.institutions:
        db = root / f"{site.id}.db"
        url = f"sqlite:///{db}"
        run_sync(url, dicom=f"folder:{root / 'synth' / site.id / 'dicom'}",
                 fhir=f"ndjson:{root / 'synth' / site.id / 'fhir'}")
        nodes.append(SimpleNamespace(node_id=site.id, name=site.name, database_url=url,
                                     db_path=db))
    return nodes


@pytest.fixture
def demo_api(demo_nodes, central_db: str, tmp_path: Path) -> Iterator[TestClient]:
    """The central app over the catalogue the demo fills from those nodes."""
    settings = Settings(data_dir=tmp_path, database_url=central_db, oidc_issuer=ISSUER)
    fill_catalogue(settings, demo_nodes)
    with TestClient(create_central_app(settings)) as client:
        yield client


def found(client: TestClient, q: str) -> set[str]:
    resp = client.get(SEARCH, params={"q": q, "size": 100})
    assert resp.status_code == 200, resp.text
    return {hit["node_id"] for hit in resp.json()["results"]}


def holding(datasets: list[dict], test) -> set[str]:
    return {d["node_id"] for d in datasets if test(d)}


def values(d: dict, field: str) -> set[str]:
    return {item["value"] for item in d[field]}


def terms(d: dict) -> str:
    return " ".join(t["display"].lower() for t in d["clinical_terms"])


def test_the_demo_catalogue_finds_what_people_type(demo_api):
    datasets = demo_api.get("/api/v1/catalogue").json()
    assert len(datasets) == 3
    # What each query should find, read from the published data itself: the ICD-10
    # chapters and blocks, the modalities and body parts, the SNOMED CT displays.
    cancer = holding(datasets, lambda d: any("C00" <= c <= "D48" for c in
                                             values(d, "conditions")))
    expected = {
        "oncology": cancer,
        "cancer": cancer,
        "MRI": holding(datasets, lambda d: "MR" in values(d, "modalities")),
        "brain MRI": holding(datasets, lambda d: "MR" in values(d, "modalities")
                             and values(d, "body_parts") & {"BRAIN", "HEAD"}),
        "lung": holding(datasets, lambda d: "CHEST" in values(d, "body_parts")
                        or any(c.startswith(("J", "C34")) for c in values(d, "conditions"))),
        "heart": holding(datasets, lambda d: "HEART" in values(d, "body_parts")
                         or any(c.startswith("I") for c in values(d, "conditions"))),
        "neuro": holding(datasets, lambda d: values(d, "body_parts") & {"BRAIN", "HEAD"}
                         or any(c.startswith("G") for c in values(d, "conditions"))),
        "glioma": holding(datasets, lambda d: "glioma" in terms(d)),
        "multiple sclerosis": holding(datasets, lambda d: "multiple sclerosis" in terms(d)),
        "body mass index": holding(datasets, lambda d: "body mass index" in terms(d)),
    }
    for q, want in expected.items():
        assert want, f"the demo data holds nothing for {q!r}: the check would be vacuous"
        assert found(demo_api, q) == want, q
    # Glioma is a rare condition: not every site has enough patients to publish it.
    assert expected["glioma"] != {d["node_id"] for d in datasets}
    assert found(demo_api, "xyzzy") == set()
    assert found(demo_api, "brain xyzzy") == set()


def test_demo_conditions_carry_their_who_titles_in_the_api_and_facets(demo_api):
    body = demo_api.get(SEARCH).json()
    labels = {f["value"]: f["label"] for f in body["facets"]["condition"]}
    assert labels["C34"] == "C34 Malignant neoplasm of bronchus and lung"
    assert labels["I10"] == "I10 Essential (primary) hypertension"
    areas = {f["value"]: f["label"] for f in body["facets"]["clinical_area"]}
    assert areas["oncology"] == "Oncology"
    modalities = {f["value"]: f["label"] for f in body["facets"]["modality"]}
    assert modalities["MR"] == "MR Magnetic resonance"
    ds = demo_api.get(f"/api/v1/catalogue/datasets/{body['results'][0]['identifier']}").json()
    assert ds["conditions"]
    assert all(c["title"] for c in ds["conditions"])
    oncology = demo_api.get(SEARCH, params={"clinical_area": "oncology", "size": 100}).json()
    assert {h["node_id"] for h in oncology["results"]} == found(demo_api, "oncology")


def sql(db: Path, query: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query, args).fetchall()


def test_published_terms_are_held_by_k_patients_with_the_displays_of_the_records(demo_api,
                                                                               demo_nodes):
    datasets = {d["node_id"]: d for d in demo_api.get("/api/v1/catalogue").json()}
    checked = 0
    for node in demo_nodes:
        ds = datasets[node.node_id]
        k = ds["suppression_threshold"]
        assert {t["system"] for t in ds["clinical_terms"]} == {SNOMED, LOINC}
        for t in ds["clinical_terms"]:
            n = sql(node.db_path, "SELECT count(DISTINCT patient_id) FROM (SELECT patient_id, "
                    "system, code, display FROM conditions UNION ALL SELECT patient_id, "
                    "system, code, display FROM observations) WHERE system = ? AND code = ? "
                    "AND coalesce(display, '') = ?", t["system"], t["code"], t["display"])
            assert t["patients"] == n[0][0] >= k
            checked += 1
        # Rare conditions were left out, and said to be.
        assert "clinical_terms:other" in ds["suppressed"]
    assert checked


@pytest.fixture
def node_copy(demo_nodes, tmp_path: Path) -> SimpleNamespace:
    node = demo_nodes[0]
    db = tmp_path / "node.db"
    shutil.copy(node.db_path, db)
    return SimpleNamespace(node_id=node.node_id, name=node.name, db_path=db,
                           database_url=f"sqlite:///{db}")


def add_condition(db: Path, patients: int, code: str, display: str) -> None:
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM patients ORDER BY id LIMIT ?",
                                          (patients,))]
        conn.executemany("INSERT INTO conditions (patient_id, fhir_id, system, code, display) "
                         "VALUES (?, ?, ?, ?, ?)",
                         [(p, f"x-{code}-{p}", SNOMED, code, display) for p in ids])


def test_a_display_held_by_fewer_than_k_patients_is_never_published(node_copy, tmp_path):
    # Two made-up conditions: one held by k - 1 patients, one by exactly k.
    add_condition(node_copy.db_path, 9, "700000001", "Zebra fever")
    add_condition(node_copy.db_path, 10, "700000002", "Quokka syndrome")
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER)
    url = f"http://{node_copy.node_id}.test"
    token = DemoIssuer(settings.issuer_key_path, ISSUER, "spe").mint("h", ["hdab"])
    app = create_node_app(NodeConfig(node_copy.node_id, node_copy.name,
                                     node_copy.database_url), settings)
    with TestClient(app, base_url=url) as node:
        resp = node.get("/api/v1/descriptors", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    [descriptor] = resp.json()
    assert descriptor["suppression_threshold"] == 10
    text = json.dumps(descriptor)
    assert "Zebra" not in text
    assert "700000001" not in text
    assert {"system": SNOMED, "code": "700000002", "display": "Quokka syndrome",
            "patients": 10} in descriptor["clinical_terms"]
    assert "clinical_terms:other" in descriptor["suppressed"]


def test_a_node_publishing_a_term_of_too_few_patients_is_not_harvested(central_db):
    import httpx

    from catalogue.harvester import harvest_nodes
    from spe.db import make_engine, make_sessionmaker, session_scope

    rogue = {"node_id": "rogue", "node_name": "Rogue node",
             "generated_at": "2026-01-01T00:00:00Z", "suppression_threshold": 10,
             "patients": 300, "studies": 293, "series": 100,
             "clinical_terms": [{"system": SNOMED, "code": "700000001",
                                 "display": "Zebra fever", "patients": 3}]}
    client = httpx.Client(transport=httpx.MockTransport(
        lambda request: httpx.Response(200, json=[rogue])))
    engine = make_engine(central_db)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            [outcome] = harvest_nodes(session, ["http://rogue.test"], "token",
                                      clients={"http://rogue.test": client})
        assert outcome.identifier is None
        assert "clinical_terms" in outcome.error
        assert "Zebra" not in outcome.error
    finally:
        client.close()
        engine.dispose()
