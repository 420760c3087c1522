"""The bulk harvest (catalogue.service.harvest) leaves what the per-dataset harvest it
replaced (catalogue.reference_harvest) left: the same rows, facets, search text, search
answers and audit entries, on a first harvest, a repeated one and one after curation.
Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from catalogue import service
from catalogue.models import CatalogueRevision, Dataset
from catalogue.reference_harvest import harvest_per_row
from catalogue.schemas import CurationIn, SearchParams
from spe.audit import CENTRAL_AUDIT, CentralAuditEntry
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.wire.descriptors import CodedTerm
from tests.catalogue.test_search import DESCRIPTORS, descriptor

#: Besides the five of test_search: many institutions with overlapping codes, one with
#: SNOMED CT terms, and one listed twice in one harvest (the second updates the first).
MORE = [descriptor(f"site-{i:02d}", f"Site {i} Hospital", patients=20 + 37 * i,
                   ages=(i % 40, 50 + i), modalities={"CT": 10 + i, "MR": 30},
                   body_parts={"CHEST": 15 + i}, conditions={"C34": 12, f"I{20 + i % 5}": 15})
        for i in range(24)]
TERMS = DESCRIPTORS[0].model_copy(update={
    "node_id": "terms", "node_name": "Terms Clinic",
    "clinical_terms": [CodedTerm(system="http://snomed.info/sct", code="230690007",
                                    display="Cerebrovascular accident", patients=12)]})
TWICE = MORE[3].model_copy(update={"patients": 999, "node_name": "Site 3, renamed"})
HARVEST = [*DESCRIPTORS, *MORE, TERMS, TWICE]
CHANGED = [d.model_copy(update={"patients": (d.patients or 0) + 100, "min_age": 1})
           for d in HARVEST[::3]]
SEARCHES = [SearchParams(), SearchParams(q="brain"), SearchParams(q="lung cancer"),
            SearchParams(q="stroke"), SearchParams(modality=["MR"], sort="title"),
            SearchParams(q="hospital", condition=["C34"], age_min=30, size=5, page=2)]


def snapshot(url: str) -> dict:
    """What a harvest leaves, by identifier (ids and times aside)."""
    engine = make_engine(url)
    volatile = {"id", "harvested_at", "curated_at"}
    try:
        with make_sessionmaker(engine)() as session:
            datasets = {d.identifier: {c.name: getattr(d, c.name)
                                       for c in Dataset.__table__.c if c.name not in volatile}
                        for d in session.execute(select(Dataset)).scalars()}
            names = dict(session.execute(select(Dataset.id, Dataset.identifier)).all())
            facets = sorted((names[i], f, v) for i, f, v in session.execute(text(
                "SELECT dataset_id, facet, value FROM catalogue_facets")))
            if engine.dialect.name == "postgresql":
                docs = sorted((names[i], v) for i, v in session.execute(text(
                    "SELECT dataset_id, search_vector::text FROM catalogue_text")))
            else:
                docs = sorted((names[i], *rest) for i, *rest in session.execute(text(
                    "SELECT rowid, title, keywords, body FROM catalogue_fts")))
            audit = session.execute(
                select(CentralAuditEntry.actor, CentralAuditEntry.object,
                       CentralAuditEntry.reason, CentralAuditEntry.details)
                .where(CentralAuditEntry.action == "catalogue.harvest")
                .order_by(CentralAuditEntry.seq)).all()
            assert CENTRAL_AUDIT.verify(session).ok
            searches = []
            for params in SEARCHES:
                out = service.search(session, params)
                searches.append((out.total, [h.identifier for h in out.results],
                                 {k: [(f.value, f.count) for f in v]
                                  for k, v in out.facets.items()}))
            return {"datasets": datasets, "facets": facets, "docs": docs, "audit": audit,
                    "searches": searches}
    finally:
        engine.dispose()


def run(url: str, harvest) -> tuple[list, dict]:
    """First harvest, a repeated one, curation, then a harvest of changed descriptors."""
    upgrade(url, "central")
    engine = make_engine(url)
    outcomes = []
    try:
        factory = make_sessionmaker(engine)
        for batch in (HARVEST, HARVEST):
            with session_scope(factory) as session:
                outcomes.append([(r[0].identifier, r[1]) if isinstance(r, tuple)
                                 else (r.identifier, r.created)
                                 for r in harvest(session, batch, actor="tester")])
        with session_scope(factory) as session:
            service.curate(session, "site-05/imaging-and-clinical-records",
                           CurationIn(title="Thoracic oncology cohort", keywords=["thorax"],
                                      access_rights="PUBLIC"), actor="curator")
        with session_scope(factory) as session:
            harvest(session, CHANGED, actor="tester")
    finally:
        engine.dispose()
    return outcomes, snapshot(url)


def test_bulk_harvest_leaves_what_the_per_row_harvest_left(database_url, other_database_url):
    old_outcomes, old = run(other_database_url, harvest_per_row)
    new_outcomes, new = run(database_url, service.harvest)
    assert new_outcomes == old_outcomes
    assert [created for _, created in new_outcomes[0]].count(True) == len(HARVEST) - 1
    assert not any(created for _, created in new_outcomes[1])
    assert len(new["datasets"]) == len(HARVEST) - 1
    assert new["facets"]
    assert new["docs"]
    assert new["datasets"]["site-03/imaging-and-clinical-records"]["node_name"] == (
        "Site 3, renamed")
    assert new["datasets"]["site-05/imaging-and-clinical-records"]["title"] == (
        "Thoracic oncology cohort")
    for part in ("datasets", "facets", "docs", "audit"):
        assert new[part] == old[part], part
    assert all(total for total, _, _ in new["searches"][:3]), new["searches"]
    assert new["searches"] == old["searches"]


def test_a_repeated_harvest_updates_every_dataset_and_adds_none(database_url):
    upgrade(database_url, "central")
    engine = make_engine(database_url)
    try:
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            service.harvest(session, HARVEST, actor="tester")
        with factory() as session:
            first = dict(session.execute(select(Dataset.identifier, Dataset.harvested_at)).all())
            facets = session.execute(text("SELECT count(*) FROM catalogue_facets")).scalar()
            revision = session.execute(select(CatalogueRevision.revision)).scalar()
        started = datetime.now(UTC)
        with session_scope(factory) as session:
            again = service.harvest(session, HARVEST, actor="tester")
        assert [h.created for h in again] == [False] * len(HARVEST)
        with factory() as session:
            second = dict(session.execute(select(Dataset.identifier, Dataset.harvested_at)).all())
            assert second.keys() == first.keys()
            assert all(at >= started for at in second.values())  # each one harvested again
            assert session.execute(
                text("SELECT count(*) FROM catalogue_facets")).scalar() == facets
            assert session.execute(select(CatalogueRevision.revision)).scalar() > revision
            assert session.execute(select(func.count()).select_from(CentralAuditEntry).where(
                CentralAuditEntry.reason == "updated")).scalar() == len(HARVEST) + 1
    finally:
        engine.dispose()


def test_a_dataset_the_session_holds_shows_the_new_harvest(database_url):
    upgrade(database_url, "central")
    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            service.harvest(session, DESCRIPTORS, actor="tester")
            held = service.get_dataset(session, "neuro/imaging-and-clinical-records")
            assert held.number_of_unique_individuals == 400
            service.harvest(session, [DESCRIPTORS[0].model_copy(update={"patients": 401})],
                            actor="tester")
            assert held.number_of_unique_individuals == 401
    finally:
        engine.dispose()


def test_an_empty_harvest_writes_nothing(database_url):
    upgrade(database_url, "central")
    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            assert service.harvest(session, [], actor="tester") == []
            entries = select(func.count()).select_from(CentralAuditEntry)
            assert session.execute(entries).scalar() == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("field", ["node_name", "collection"])
def test_harvested_columns_are_the_descriptor_fields_the_harvest_copies(field):
    """HARVESTED (what an upsert overwrites) is exactly what a harvest copies, so no
    harvested field is left stale and no curated one overwritten."""
    copied = service._harvested(DESCRIPTORS[0], datetime.now(UTC))
    assert set(copied) == set(service.HARVESTED)
    assert (field in service.HARVESTED) == (field == "node_name")
