"""The catalogue as HealthDCAT-AP RDF: valid against the vendored shapes, served publicly."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rdflib import Graph, Literal, URIRef
from rdflib import namespace as ns
from sqlalchemy import select

from catalogue import rdf, service
from catalogue.harvester import run_harvest
from spe.app import create_central_app
from spe.audit import CentralAuditEntry
from spe.db import make_engine, make_sessionmaker
from spe.identity import demo_issuer
from spe.settings import Settings
from tests.catalogue.conftest import ISSUER, PATIENTS

BASE = "http://catalogue.test"
NON_PUBLIC = URIRef("http://publications.europa.eu/resource/authority/access-right/NON_PUBLIC")


@pytest.fixture
def harvested(node_clients, central_db) -> str:
    clients, issuer = node_clients
    outcomes = run_harvest(central_db, list(clients), issuer.mint("h", ["hdab"]),
                           clients=clients)
    assert all(o.error is None for o in outcomes)
    return central_db


def exported(url: str) -> Graph:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return rdf.catalogue_graph(service.list_datasets(session), BASE)
    finally:
        engine.dispose()


def test_export_of_a_harvested_catalogue_conforms_to_healthdcat_ap(harvested):
    g = exported(harvested)
    conforms, report = rdf.validate(g)
    assert conforms, report
    datasets = list(g.subjects(ns.RDF.type, ns.DCAT.Dataset))
    assert len(datasets) == 2
    for ds in datasets:
        assert g.value(ds, ns.DCTERMS.accessRights) == NON_PUBLIC
        n = g.value(ds, rdf.HEALTHDCATAP.numberOfUniqueIndividuals)
        assert n.datatype == ns.XSD.nonNegativeInteger
        assert n.toPython() == PATIENTS
        assert g.value(g.value(ds, ns.DCTERMS.temporal), ns.DCAT.startDate) is not None
        assert "aged" in str(g.value(ds, rdf.HEALTHDCATAP.populationCoverage))


@pytest.fixture
def with_conditions(harvested) -> str:
    """The harvested catalogue plus a dataset whose node lists ICD-10 categories."""
    from spe.db import session_scope
    from tests.catalogue.test_search import DESCRIPTORS

    engine = make_engine(harvested)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            service.harvest(session, DESCRIPTORS[:1], actor="tester")
    finally:
        engine.dispose()
    return harvested


def test_condition_codes_are_exported_as_code_values(with_conditions):
    g = exported(with_conditions)
    assert rdf.validate(g)[0]
    codes = {str(g.value(c, ns.SKOS.notation)) for c in g.subjects(ns.RDF.type, ns.SKOS.Concept)}
    engine = make_engine(with_conditions)
    try:
        with make_sessionmaker(engine)() as session:
            listed = {c["value"] for d in service.list_datasets(session) for c in d.conditions}
    finally:
        engine.dispose()
    assert {"C71", "G35"} <= codes == listed


def test_a_code_value_without_its_scheme_fails(with_conditions):
    g = exported(with_conditions)
    concept = next(g.subjects(ns.RDF.type, ns.SKOS.Concept))
    g.set((concept, ns.SKOS.inScheme, Literal("ICD-10")))
    conforms, report = rdf.validate(g)
    assert not conforms
    assert "inScheme" in report


@pytest.mark.parametrize(("prop", "shown_as"), [
    (ns.DCTERMS.description, "dct:description"),
    (ns.DCAT.distribution, "dcat:distribution"),
    (rdf.HEALTHDCATAP.hdab, "healthdcatap:hdab"),
    (ns.DCTERMS.provenance, "dct:provenance"),
])
def test_export_without_a_required_property_fails_naming_it(harvested, prop, shown_as):
    g = exported(harvested)
    ds = next(g.subjects(ns.RDF.type, ns.DCAT.Dataset))
    g.remove((ds, prop, None))
    conforms, report = rdf.validate(g)
    assert not conforms
    assert f"Result Path: {shown_as}" in report


def test_a_count_written_as_a_plain_integer_fails(harvested):
    g = exported(harvested)
    ds = next(g.subjects(ns.RDF.type, ns.DCAT.Dataset))
    g.set((ds, rdf.HEALTHDCATAP.numberOfRecords, Literal("many")))
    conforms, report = rdf.validate(g)
    assert not conforms
    assert "numberOfRecords" in report


def test_shapes_load_from_disk_without_imports():
    assert not list(rdf.shapes_graph().triples((None, ns.OWL.imports, None)))


@pytest.fixture
def central_client(harvested, tmp_path: Path):
    settings = Settings(data_dir=tmp_path, database_url=harvested, oidc_issuer=ISSUER)
    app = create_central_app(settings)
    with TestClient(app, base_url=BASE) as client:
        yield client, app.state.ctx


@pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")
def test_catalogue_is_public_in_json_turtle_and_json_ld(central_client):
    client, _ = central_client
    plain = client.get("/api/v1/catalogue")
    assert plain.status_code == 200
    assert {d["node_id"] for d in plain.json()} == {"site-a", "site-b"}

    turtle = client.get("/api/v1/catalogue", headers={"Accept": "text/turtle"})
    assert turtle.headers["content-type"].startswith("text/turtle")
    g = Graph().parse(data=turtle.text, format="turtle")
    assert rdf.validate(g)[0]
    assert len(list(g.subjects(ns.RDF.type, ns.DCAT.Dataset))) == 2

    jsonld = client.get("/api/v1/catalogue", headers={"Accept": "application/ld+json"})
    assert jsonld.headers["content-type"].startswith("application/ld+json")
    assert len(Graph().parse(data=jsonld.text, format="json-ld")) == len(g)


def test_one_dataset_by_identifier(central_client):
    client, _ = central_client
    resp = client.get("/api/v1/catalogue/datasets/site-a/imaging-and-clinical-records",
                      headers={"Accept": "text/turtle"})
    assert resp.status_code == 200
    g = Graph().parse(data=resp.text, format="turtle")
    ds = URIRef(f"{BASE}/api/v1/catalogue/datasets/site-a/imaging-and-clinical-records")
    assert (ds, ns.RDF.type, ns.DCAT.Dataset) in g
    missing = client.get("/api/v1/catalogue/datasets/site-z/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_only_the_holders_approver_curates_and_every_decision_is_audited(central_client):
    client, ctx = central_client
    central_issuer = demo_issuer(ctx.settings)
    path = "/api/v1/catalogue/datasets/site-b/imaging-and-clinical-records"
    body = {"title": "Breast imaging cohort"}

    def patch(*roles: str, institution: str | None = None):
        token = central_issuer.mint("u-" + "-".join(roles), list(roles),
                                    institution=institution)
        return client.patch(path, json=body, headers={"Authorization": f"Bearer {token}"})

    assert client.patch(path, json=body).status_code == 401
    for refused in (patch("researcher"), patch("hdab"), patch("admin"),
                    patch("approver", institution="site-a")):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "forbidden"
    other = patch("approver", institution="site-a").json()["detail"]
    assert "only approvers of site-b" in other
    assert client.get(path).json()["title"] != "Breast imaging cohort"

    ok = patch("approver", institution="site-b")
    assert ok.status_code == 200, ok.text
    assert client.get(path).json()["title"] == "Breast imaging cohort"
    with ctx.sessions() as session:
        entry = session.execute(select(CentralAuditEntry).where(
            CentralAuditEntry.action == "catalogue.curate")).scalar_one()
        decisions = session.execute(select(CentralAuditEntry.decision).where(
            CentralAuditEntry.action == "catalogue.curate.authorize")
            .order_by(CentralAuditEntry.seq)).scalars().all()
    assert entry.object == "site-b/imaging-and-clinical-records"
    assert entry.details.count("Breast imaging cohort") == 1
    # Two refusals of the other institution's approver (one read for the detail), then
    # the holder's approver; the role-level refusals stop at the door (authorize).
    assert decisions == ["deny", "deny", "allow"]
