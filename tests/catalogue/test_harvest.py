"""Harvesting node descriptors into the catalogue, checked against the node indexes."""

from __future__ import annotations

import sqlite3
from datetime import date

from sqlalchemy import select

from catalogue import service
from catalogue.harvester import harvest_nodes, run_harvest
from catalogue.models import Dataset
from catalogue.schemas import CurationIn
from gateway.node.descriptors import age_at
from spe.audit import CENTRAL_AUDIT, CentralAuditEntry
from spe.db import make_engine, make_sessionmaker, session_scope


def index_facts(db_path) -> dict:
    """What the node index holds, computed here with plain SQL, independently of the node."""
    with sqlite3.connect(db_path) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        ages = [age_at(date.fromisoformat(b), date.fromisoformat(s)) for b, s in conn.execute(
            "SELECT p.birth_date, s.study_date FROM studies s JOIN patients p "
            "ON p.id = s.patient_id WHERE p.birth_date IS NOT NULL "
            "AND s.study_date IS NOT NULL")]
        return {
            "patients": one("SELECT count(*) FROM patients"),
            "studies": one("SELECT count(*) FROM studies"),
            "series": one("SELECT count(*) FROM series"),
            "first": one("SELECT min(study_date) FROM studies"),
            "last": one("SELECT max(study_date) FROM studies"),
            "ages": ages,
            "icd10": dict(conn.execute(
                "SELECT substr(code, 1, 3), count(DISTINCT patient_id) FROM conditions "
                "WHERE system = 'http://hl7.org/fhir/sid/icd-10' GROUP BY substr(code, 1, 3)")),
            "manufacturers": dict(conn.execute(
                "SELECT manufacturer, count(*) FROM series WHERE manufacturer IS NOT NULL "
                "GROUP BY manufacturer")),
        }


def sessions(url: str):
    engine = make_engine(url)
    return engine, make_sessionmaker(engine)


def test_node_descriptor_needs_hdab_or_admin(node_clients):
    clients, issuer = node_clients
    url, client = next(iter(clients.items()))
    for roles, status in ((["hdab"], 200), (["admin"], 200), (["researcher"], 403)):
        resp = client.get("/api/v1/descriptors",
                          headers={"Authorization": f"Bearer {issuer.mint('u', roles)}"})
        assert resp.status_code == status, (roles, resp.text)
    assert client.get("/api/v1/descriptors").status_code == 401


def test_a_released_descriptor_is_audited_at_the_node(node_clients, synced_nodes):
    clients, issuer = node_clients
    node = synced_nodes[0]
    client = clients[f"http://{node.node_id}.test"]
    resp = client.get("/api/v1/descriptors",
                      headers={"Authorization": f"Bearer {issuer.mint('h', ['hdab'])}"})
    assert resp.status_code == 200
    with sqlite3.connect(node.db_path) as conn:
        rows = conn.execute("SELECT actor, object, reason FROM audit_log "
                            "WHERE action = 'catalogue.descriptor'").fetchall()
    assert rows[-1][1] == f"{node.node_id}/imaging-and-clinical-records"
    assert "below 10 suppressed" in rows[-1][2]


def test_harvest_matches_the_node_indexes_and_suppresses_small_counts(
    node_clients, synced_nodes, central_db
):
    clients, issuer = node_clients
    outcomes = run_harvest(central_db, list(clients), issuer.mint("h", ["hdab"]),
                           actor="tester", clients=clients)
    assert [(o.error, o.created) for o in outcomes] == [(None, True), (None, True)]

    engine, factory = sessions(central_db)
    try:
        with factory() as session:
            datasets = {d.node_id: d for d in service.list_datasets(session)}
            assert set(datasets) == {n.node_id for n in synced_nodes}
            small_seen = 0
            for node in synced_nodes:
                facts = index_facts(node.db_path)
                d = datasets[node.node_id]
                assert d.identifier == f"{node.node_id}/imaging-and-clinical-records"
                assert d.title == f"Imaging and clinical records of {node.name}"
                assert d.number_of_unique_individuals == facts["patients"]
                assert d.number_of_records == facts["studies"]
                assert d.number_of_series == facts["series"]
                # Ranges trimmed inward (tests/catalogue/test_descriptor_disclosure.py
                # checks that k patients lie beyond each end).
                assert (min(facts["ages"]) < d.min_typical_age <= d.max_typical_age
                        < max(facts["ages"]))
                assert (facts["first"] < d.temporal_start.isoformat()
                        <= d.temporal_end.isoformat() < facts["last"])
                assert set(d.coding_systems) == {"http://snomed.info/sct",
                                                 "http://hl7.org/fhir/sid/icd-10"}
                got = {m["value"]: m["count"] for m in d.manufacturers}
                assert set(got) == set(facts["manufacturers"])
                for name, n in facts["manufacturers"].items():
                    if n < 10:
                        small_seen += 1
                        assert got[name] is None  # suppressed, never a 0
                        assert f"manufacturers:{name}" in d.suppressed
                    else:  # shown exactly, or suppressed as a small one's complement
                        assert got[name] in (n, None)
                conditions = {c["value"]: c["count"] for c in d.conditions}
                assert conditions == {k: n for k, n in facts["icd10"].items() if n >= 10}
                rare = [k for k, n in facts["icd10"].items() if n < 10]
                assert ("conditions:other" in d.suppressed) == bool(rare)
                assert not any(code in str(d.suppressed) for code in rare)
            assert small_seen, "the synthetic data should hold a manufacturer with < 10 series"
            actions = session.execute(
                select(CentralAuditEntry.action, CentralAuditEntry.actor)
                .where(CentralAuditEntry.action == "catalogue.harvest")).all()
            assert actions == [("catalogue.harvest", "tester")] * 2
            assert CENTRAL_AUDIT.verify(session).ok
    finally:
        engine.dispose()


def test_second_harvest_keeps_the_curated_title(node_clients, central_db):
    clients, issuer = node_clients
    token = issuer.mint("h", ["hdab"])
    run_harvest(central_db, list(clients), token, clients=clients)
    engine, factory = sessions(central_db)
    try:
        first = next(iter(clients)).removeprefix("http://").removesuffix(".test")
        identifier = f"{first}/imaging-and-clinical-records"
        with session_scope(factory) as session:
            service.curate(session, identifier,
                           CurationIn(title="Neuro imaging cohort", keywords=["neuro"]),
                           actor="curator")
        outcomes = run_harvest(central_db, list(clients), token, clients=clients)
        assert [o.created for o in outcomes] == [False, False]
        with factory() as session:
            d = service.get_dataset(session, identifier)
            assert (d.title, d.keywords, d.curated_by) == ("Neuro imaging cohort", ["neuro"],
                                                           "curator")
            assert d.number_of_unique_individuals is not None  # harvested fields refreshed
            assert session.execute(select(Dataset)).scalars().all().__len__() == 2
    finally:
        engine.dispose()


def test_an_unreachable_node_is_reported_and_the_others_harvested(node_clients, central_db):
    clients, issuer = node_clients
    urls = ["http://127.0.0.1:9", *clients]  # port 9 (discard): nothing listens
    engine, factory = sessions(central_db)
    try:
        with session_scope(factory) as session:
            outcomes = harvest_nodes(session, urls, issuer.mint("h", ["hdab"]),
                                     clients=clients)
        assert "unreachable" in (outcomes[0].error or "")
        assert [o.error for o in outcomes[1:]] == [None, None]
        with factory() as session:
            errors = session.execute(select(CentralAuditEntry.object).where(
                CentralAuditEntry.decision == "error")).scalars().all()
        assert errors == ["http://127.0.0.1:9"]
    finally:
        engine.dispose()


def test_a_node_refusing_the_token_is_reported(node_clients, central_db):
    clients, issuer = node_clients
    engine, factory = sessions(central_db)
    try:
        with session_scope(factory) as session:
            outcomes = harvest_nodes(session, list(clients),
                                     issuer.mint("r", ["researcher"]), clients=clients)
        assert all("HTTP 403" in (o.error or "") for o in outcomes)
    finally:
        engine.dispose()


def test_cli_reports_an_unreachable_node_and_exits_1(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from spe.cli.main import app
    from spe.identity import demo_issuer
    from spe.settings import Settings

    monkeypatch.setenv("SPE_DATA_DIR", str(tmp_path))
    demo_issuer(Settings())  # the central service's key, made when it first started
    url = f"sqlite:///{tmp_path / 'central.db'}"
    result = CliRunner().invoke(app, ["catalogue", "harvest", "--node", "http://127.0.0.1:9",
                                      "--database-url", url])
    assert result.exit_code == 1, result.output
    assert "unreachable" in result.output


def test_cli_outside_development_needs_a_token(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from spe.cli.main import app

    monkeypatch.setenv("SPE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPE_ENVIRONMENT", "test")
    result = CliRunner().invoke(app, ["catalogue", "harvest", "--node", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "--token" in result.output


def test_a_node_claiming_another_nodes_dataset_is_refused(node_clients, central_db):
    clients, issuer = node_clients
    first = next(iter(clients))
    # The same node under a second URL: its descriptor names a dataset already harvested.
    clients = {**clients, "http://impostor.test": clients[first]}
    engine, factory = sessions(central_db)
    try:
        with session_scope(factory) as session:
            outcomes = harvest_nodes(session, list(clients), issuer.mint("h", ["hdab"]),
                                     clients=clients)
        assert [o.error is None for o in outcomes] == [True, True, False]
        assert "already described by" in outcomes[-1].error
    finally:
        engine.dispose()


def test_the_scheduled_harvest_runs_rounds_and_survives_failing_nodes(tmp_path):
    import asyncio

    from catalogue.schedule import ACTOR, harvest_periodically
    from spe.identity import StaticToken

    url = f"sqlite:///{tmp_path / 'central.db'}"

    async def two_rounds() -> None:
        task = asyncio.create_task(harvest_periodically(
            url, ["http://127.0.0.1:9"], StaticToken("token"), interval=0.05))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if rounds_logged() >= 2:
                break
        task.cancel()

    def rounds_logged() -> int:
        engine, factory = sessions(url)
        try:
            with factory() as session:
                return len(session.execute(select(CentralAuditEntry).where(
                    CentralAuditEntry.actor == ACTOR,
                    CentralAuditEntry.decision == "error")).all())
        except Exception:  # tables not there before the first round migrates
            return 0
        finally:
            engine.dispose()

    asyncio.run(two_rounds())
    assert rounds_logged() >= 2


def test_descriptors_are_refused_when_the_disclosure_policy_gives_no_rule(
    synced_nodes, tmp_path
):
    import shutil

    from fastapi.testclient import TestClient

    from gateway.node.app import create_node_app
    from gateway.node.config import NodeConfig
    from spe.identity import DemoIssuer
    from spe.settings import REPO_ROOT, Settings
    from tests.catalogue.conftest import ISSUER

    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    rules = policies / "disclosure" / "disclosure.rego"
    rules.write_text(rules.read_text().replace('"public": {"catalogue_descriptor"',
                                               '"public": {"something_else"'))
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER, policy_dir=policies)
    node = synced_nodes[0]
    app = create_node_app(NodeConfig(node.node_id, node.name, node.database_url), settings)
    token = DemoIssuer(settings.issuer_key_path, ISSUER, "spe").mint("h", ["hdab"])
    with TestClient(app) as client:
        resp = client.get("/api/v1/descriptors", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403
    assert "no disclosure rule for catalogue_descriptor" in resp.json()["detail"]
    assert "patients" not in resp.text
