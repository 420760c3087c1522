"""The public catalogue attacked as anyone can: harvest the real nodes' descriptors, read
the catalogue's public API, and try to work out a suppressed count or a single patient.

The attacker subtracts: in every breakdown of the series (modalities, body parts,
manufacturers) the suppressed counts and the series with no value add up to the published
total minus the shown counts. The node indexes are then read with plain SQL to check that
every published end of a range has at least the threshold of patients at or beyond it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from rdflib import Graph
from rdflib import namespace as ns
from sqlalchemy import select

from catalogue.harvester import harvest_nodes, run_harvest
from catalogue.rdf import HEALTHDCATAP
from spe.app import create_central_app
from spe.audit import CentralAuditEntry
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.settings import Settings
from tests.catalogue.conftest import ISSUER

BREAKDOWNS = {"modalities": "modality", "body_parts": "body_part",
              "manufacturers": "manufacturer"}
# Completed years at the study, in SQL (SQLite): the year difference, less one before the
# birthday.
AGE_SQL = ("(CAST(strftime('%Y', s.study_date) AS INTEGER) "
           "- CAST(strftime('%Y', p.birth_date) AS INTEGER) "
           "- (strftime('%m-%d', s.study_date) < strftime('%m-%d', p.birth_date)))")


@pytest.fixture
def public_api(node_clients, central_db, tmp_path: Path) -> Iterator[TestClient]:
    """The central app's public API over a catalogue harvested from the two real nodes."""
    clients, issuer = node_clients
    outcomes = run_harvest(central_db, list(clients), issuer.mint("h", ["hdab"]),
                           clients=clients)
    assert [o.error for o in outcomes] == [None, None]
    app = create_central_app(Settings(data_dir=tmp_path, database_url=central_db,
                                      oidc_issuer=ISSUER))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def catalogue(public_api) -> dict[str, dict]:
    """Every dataset as the public API gives it in JSON, by node."""
    listed = public_api.get("/api/v1/catalogue")
    assert listed.status_code == 200
    return {d["node_id"]: d for d in listed.json()}


def sql(db: Path, query: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query, args).fetchall()


def test_no_suppressed_count_can_be_recomputed_from_a_total(catalogue, synced_nodes):
    hidden_seen = 0
    for node in synced_nodes:
        ds = catalogue[node.node_id]
        k = ds["suppression_threshold"]
        total = ds["number_of_series"]
        assert total is not None
        assert total >= k
        for field, column in BREAKDOWNS.items():
            cells = ds[field]
            assert cells, f"{node.node_id} publishes no {field}"
            hidden = [c["value"] for c in cells if c["count"] is None]
            rest = total - sum(c["count"] for c in cells if c["count"] is not None)
            truth = dict(sql(node.db_path, f"SELECT {column}, count(*) FROM series "
                                           f"WHERE {column} IS NOT NULL AND {column} != '' "
                                           f"GROUP BY {column}"))
            for c in cells:
                if c["count"] is not None:  # shown: exact, and never a small count
                    assert c["count"] == truth[c["value"]] >= k, (node.node_id, field, c)
            assert all(value in hidden for value, n in truth.items() if n < k)
            # The attacker: each hidden count is at least 1 and the series with no value
            # at least 0, so each hidden count lies in [1, rest - (hidden - 1)].
            if not hidden:
                assert rest == 0 or rest >= k, (node.node_id, field)  # no small remainder
                continue
            hidden_seen += len(hidden)
            assert rest >= k, (node.node_id, field, "the hidden counts are a small group")
            low, high = 1, rest - (len(hidden) - 1)
            for value in hidden:
                assert low < high, (node.node_id, field, value, "recomputed")
                assert low <= truth[value] <= high  # the attacker's reasoning is sound
            # A better-informed attacker: knows how many series carry no value, which
            # hidden counts are the small ones (1..k-1), and that the others (at least k)
            # were the smallest counts left, so no larger than the smallest shown one.
            group = sum(truth[v] for v in hidden)
            smallest_shown = min((c["count"] for c in cells if c["count"] is not None),
                                 default=group)
            bounds = {v: (1, k - 1) if truth[v] < k else (k, smallest_shown) for v in hidden}
            for value in hidden:
                if truth[value] >= k:
                    continue
                others = [bounds[v] for v in hidden if v != value]
                low = max(1, group - sum(hi for _, hi in others))
                high = min(k - 1, group - sum(lo for lo, _ in others))
                assert low < high, (node.node_id, field, value, "pinned")
                assert low <= truth[value] <= high
    assert hidden_seen, "the synthetic data should hold breakdowns with suppressed counts"


def test_shares_give_no_small_count(catalogue, synced_nodes):
    checked = 0
    for node in synced_nodes:
        ds = catalogue[node.node_id]
        k = ds["suppression_threshold"]
        bases = {"study": ds["number_of_records"], "patient": ds["number_of_unique_individuals"]}
        for name, share in ds["completeness"].items():
            if share is None:
                continue
            base = bases[name.split("_")[0]]
            part = round(share * base)
            assert part in (0, base) or (part >= k and base - part >= k), (node.node_id, name)
            checked += 1
    assert checked


def patients_with_a_study(db: Path, where: str, *args) -> int:
    """Distinct patients with a dated study (and a birth date) where `where` holds."""
    return sql(db, "SELECT count(DISTINCT s.patient_id) FROM studies s "
               "JOIN patients p ON p.id = s.patient_id WHERE p.birth_date IS NOT NULL "
               f"AND s.study_date IS NOT NULL AND {where}", *args)[0][0]


def test_every_published_end_of_a_range_has_k_patients_at_or_beyond_it(catalogue,
                                                                       synced_nodes):
    for node in synced_nodes:
        ds = catalogue[node.node_id]
        k = ds["suppression_threshold"]
        low, high = ds["min_typical_age"], ds["max_typical_age"]
        start, end = ds["temporal_start"], ds["temporal_end"]
        assert None not in (low, high, start, end), f"{node.node_id} publishes no ranges"
        db = node.db_path
        at_or_beyond = {
            "min age": patients_with_a_study(db, f"{AGE_SQL} <= ?", low),
            "max age": patients_with_a_study(db, f"{AGE_SQL} >= ?", high),
            "first study day": patients_with_a_study(db, "s.study_date <= ?", start),
            "last study day": patients_with_a_study(db, "s.study_date >= ?", end),
            # and the other side of each end, so the range is not a handful either
            "above min age": patients_with_a_study(db, f"{AGE_SQL} >= ?", low),
            "before last day": patients_with_a_study(db, "s.study_date <= ?", end),
        }
        assert all(n >= k for n in at_or_beyond.values()), (node.node_id, at_or_beyond)


def test_the_rdf_export_publishes_the_same_trimmed_ranges(public_api, catalogue):
    turtle = public_api.get("/api/v1/catalogue", headers={"Accept": "text/turtle"})
    g = Graph().parse(data=turtle.text, format="turtle")
    datasets = list(g.subjects(ns.RDF.type, ns.DCAT.Dataset))
    assert len(datasets) == len(catalogue) == 2
    for s in datasets:
        ds = catalogue[str(g.value(s, ns.DCTERMS.identifier)).split("/")[0]]
        period = g.value(s, ns.DCTERMS.temporal)
        assert (g.value(s, HEALTHDCATAP.minTypicalAge).toPython(),
                g.value(s, HEALTHDCATAP.maxTypicalAge).toPython(),
                g.value(period, ns.DCAT.startDate).toPython().isoformat(),
                g.value(period, ns.DCAT.endDate).toPython().isoformat()) == (
            ds["min_typical_age"], ds["max_typical_age"], ds["temporal_start"],
            ds["temporal_end"])
        coverage = str(g.value(s, HEALTHDCATAP.populationCoverage))
        assert f"typically aged {ds['min_typical_age']} to {ds['max_typical_age']}" in coverage


def test_listed_conditions_and_coding_systems_are_held_by_k_patients(catalogue,
                                                                     synced_nodes):
    listed = 0
    for node in synced_nodes:
        ds = catalogue[node.node_id]
        k = ds["suppression_threshold"]
        by_system = dict(sql(node.db_path, "SELECT system, count(DISTINCT patient_id) "
                                           "FROM conditions GROUP BY system"))
        for system in ds["coding_systems"]:
            assert by_system[system] >= k
            listed += 1
        for c in ds["conditions"]:
            n = sql(node.db_path, "SELECT count(DISTINCT patient_id) FROM conditions "
                    "WHERE system = 'http://hl7.org/fhir/sid/icd-10' "
                    "AND upper(substr(code, 1, 3)) = ?", c["value"])[0][0]
            assert c["count"] == n >= k
            listed += 1
    assert listed


def old_style_descriptor() -> dict:
    """What a node that does not protect its descriptor sends: a lone suppressed count,
    the youngest patient's age and the first study day."""
    return {
        "node_id": "rogue", "node_name": "Rogue node", "generated_at": "2026-01-01T00:00:00Z",
        "suppression_threshold": 10, "patients": 300, "studies": 293, "series": 100,
        "min_age": 13, "max_age": 91, "temporal_start": "2015-01-15",
        "temporal_end": "2025-10-20",
        "modalities": [{"value": "MR", "count": 96}, {"value": "PT", "count": None}],
        "suppressed": ["modalities:PT"],
    }


def test_a_node_that_publishes_a_subtractable_descriptor_is_not_harvested(central_db):
    rogue = httpx.Client(transport=httpx.MockTransport(
        lambda request: httpx.Response(200, json=[old_style_descriptor()])))
    url = "http://rogue.test"
    engine = make_engine(central_db)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            [outcome] = harvest_nodes(session, [url], "token", clients={url: rogue})
        assert outcome.identifier is None
        for place in ("modalities", "min_age", "max_age", "temporal_start", "temporal_end"):
            assert place in outcome.error
        assert "4" not in outcome.error.replace(url, "")  # the place, never the value
        with make_sessionmaker(engine)() as session:
            errors = session.execute(select(CentralAuditEntry.object).where(
                CentralAuditEntry.action == "catalogue.harvest",
                CentralAuditEntry.decision == "error")).scalars().all()
            harvested = session.execute(select(CentralAuditEntry.object).where(
                CentralAuditEntry.decision == "info")).scalars().all()
        assert errors == [url]
        assert harvested == []
    finally:
        rogue.close()
        engine.dispose()


def test_a_descriptor_computed_with_a_lower_threshold_is_not_harvested(synced_nodes, tmp_path,
                                                                      central_db):
    # A node whose own policy says 1: its counts are all exact and every check passes with
    # k = 1, so only the centre's own threshold can refuse it.
    import shutil

    from gateway.node.app import create_node_app
    from gateway.node.config import NodeConfig
    from spe.identity import DemoIssuer
    from spe.policy import make_policy_service
    from spe.settings import REPO_ROOT

    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    rules = policies / "disclosure" / "disclosure.rego"
    rules.write_text(rules.read_text().replace(
        '"catalogue_descriptor": {"min_count": 10', '"catalogue_descriptor": {"min_count": 1'))
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER, policy_dir=policies)
    node = synced_nodes[0]
    url = f"http://{node.node_id}.test"
    lax = TestClient(create_node_app(NodeConfig(node.node_id, node.name, node.database_url),
                                     settings), base_url=url)
    token = DemoIssuer(settings.issuer_key_path, ISSUER, "spe").mint("h", ["hdab"])
    try:
        [outcome] = run_harvest(central_db, [url], token, clients={url: lax})
        assert "suppression_threshold: below the catalogue's 10" in outcome.error
        # Under a centre whose own rule is as lax, it is harvested: the check is the rule.
        [outcome] = run_harvest(central_db, [url], token, clients={url: lax},
                                policy=make_policy_service(settings))
        assert outcome.error is None
    finally:
        lax.close()


def protected_descriptor(**fields) -> dict:
    """A descriptor a node could publish, nothing to work out from it; `fields` on top."""
    return {"node_id": "rogue", "node_name": "Rogue node",
            "generated_at": "2026-01-01T00:00:00Z", "suppression_threshold": 10,
            "patients": 300, "studies": 293, "series": 100, **fields}


@pytest.mark.parametrize("answer", [
    pytest.param([protected_descriptor(node_name="x" * 5_000_000)], id="5 MB name"),
    pytest.param([protected_descriptor(manufacturers=[{"value": f"v{i}", "count": None}
                                                      for i in range(20_000)])],
                 id="20,000 list items"),
    pytest.param([protected_descriptor(node_id=f"n{i}") for i in range(40_000)],
                 id="over 8 MiB of descriptors"),
])
def test_a_node_cannot_push_megabytes_into_the_public_catalogue(central_db, answer):
    rogue = httpx.Client(transport=httpx.MockTransport(
        lambda request: httpx.Response(200, json=answer)))
    url = "http://rogue.test"
    engine = make_engine(central_db)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            [outcome] = harvest_nodes(session, [url], "token", clients={url: rogue})
        assert outcome.identifier is None
        assert "not harvested" in outcome.error or "not a list of dataset" in outcome.error
        assert len(outcome.error) < 500  # the reason, not the payload
        with make_sessionmaker(engine)() as session:
            harvested = session.execute(select(CentralAuditEntry.object).where(
                CentralAuditEntry.decision == "info")).scalars().all()
        assert harvested == []
    finally:
        rogue.close()
        engine.dispose()
