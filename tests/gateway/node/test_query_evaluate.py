"""Federated queries evaluated against a node's index in SQL (`gateway.node.query`).

Three layers:

- hand-made index rows on SQLite and on PostgreSQL (`database_url`), with expectations
  written out by patient: every criterion type, age and date boundaries, LIKE wildcards,
  and/or/not, each stratum;
- a synthetic node (`spe.synth`) synced into SQLite, checked against answers computed
  independently, with plain `sqlite3` SQL and from the NDJSON files;
- the same synthetic DICOM synced from the folder and from a real Orthanc over DIMSE: the
  imaging queries give the same evaluations.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

from gateway.node.descriptors import age_at
from gateway.node.index.models import Condition, Observation, Patient, Series, Study
from gateway.node.index.repository import refresh_ages
from gateway.node.query import Evaluation, evaluate, matching_patients
from gateway.node.query.evaluate import stratum_domain
from gateway.node.service import run_sync
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.synth import generate
from spe.wire.query import AGE_BANDS, CODE_SYSTEMS, Query
from tests.orthanc import orthanc_server

TODAY = date(2025, 6, 15)
SITE = "site-x"

# ---------------------------------------------------------------------------- factory


@dataclass
class Person:
    """A hand-made patient: studies are (date, [(modality, body part, manufacturer)]),
    conditions (short system, code), observations (LOINC code, value, unit)."""

    key: str
    sex: str | None = None
    birth: date | None = None
    studies: list[tuple[date | None, list[tuple[str, str | None, str | None]]]] = field(
        default_factory=list)
    conditions: list[tuple[str, str]] = field(default_factory=list)
    observations: list[tuple[str, float | None, str | None]] = field(default_factory=list)


def add_people(session, people: list[Person]) -> dict[str, int]:
    """Insert the people as index rows; {key: patient id}. Ids of the different tables
    come from disjoint ranges, so a join on the wrong column finds nothing."""
    ids: dict[str, int] = {}
    rows: dict[type, list] = defaultdict(list)
    study_id, series_id = 1000, 50000
    for n, person in enumerate(people):
        pid = 101 + 7 * n
        ids[person.key] = pid
        rows[Patient].append(Patient(id=pid, patient_key=person.key, sex=person.sex,
                                     fhir_id=f"fhir-{person.key}", birth_date=person.birth))
        for study_date, series in person.studies:
            study_id += 1
            rows[Study].append(Study(
                id=study_id, study_uid=f"2.25.{study_id}", patient_id=pid,
                study_date=study_date, modalities="\\".join(sorted({s[0] for s in series})),
                series_count=len(series), instance_count=len(series)))
            for modality, body_part, manufacturer in series:
                series_id += 1
                rows[Series].append(Series(
                    id=series_id, series_uid=f"2.25.{series_id}", study_id=study_id,
                    modality=modality, body_part=body_part, manufacturer=manufacturer,
                    instance_count=1))
        for system, code in person.conditions:
            uri = (CODE_SYSTEMS["icd-10"][1] if system == "icd-10-cm"
                   else CODE_SYSTEMS[system][0])
            rows[Condition].append(Condition(patient_id=pid, system=uri, code=code))
        for code, value, unit in person.observations:
            rows[Observation].append(Observation(patient_id=pid, system=CODE_SYSTEMS["loinc"][0],
                                                 code=code, value=value, unit=unit))
    # Table by table: the foreign keys are checked on insert.
    for model in (Patient, Study, Series, Condition, Observation):
        session.add_all(rows[model])
        session.flush()
    refresh_ages(session)  # as every sync does
    return ids


PEOPLE = [
    # 40th birthday on 2020-06-15: 39 at her first study, 40 at her second.
    Person("ann", "female", date(1980, 6, 15),
           studies=[(date(2020, 6, 14), [("MR", "HEAD", "SIEMENS")]),
                    (date(2020, 6, 15), [("CT", "CHEST", "GE MEDICAL SYSTEMS")])],
           conditions=[("icd-10", "C71.9"), ("snomed", "393564001")],
           observations=[("29463-7", 70.0, "kg")]),
    # Born on 29 February: 60 on 2021-02-28 still, 61 from 1 March.
    Person("bob", "male", date(1960, 2, 29),
           studies=[(date(2021, 2, 28), [("MR", "BRAIN", "Philips"),
                                         ("US", "ABDOMEN", "Šiemens Ωmega")])],
           conditions=[("icd-10", "C71"), ("icd-10", "I10")],
           observations=[("29463-7", 95000.0, "g")]),
    # Nothing known about the person; an undated study; a code with a LIKE wildcard in it.
    Person("cat", None, None,
           studies=[(None, [("MR", "HEAD", None)])],
           conditions=[("icd-10", "X1_2")],
           observations=[("29463-7", None, "kg")]),
    Person("dan", "male", date(2010, 1, 1),
           conditions=[("icd-10", "X1A2"), ("icd-10-cm", "E11.65")],
           observations=[("4548-4", 6.5, "%")]),
    # 49 at the DX, 64 and 65 at the CT/MR studies (birthday on 31 December).
    Person("eve", "female", date(1950, 12, 31),
           studies=[(date(2000, 1, 1), [("DX", "CHEST", "Agfa")]),
                    (date(2015, 12, 30), [("CT", "HEAD", "SIEMENS")]),
                    (date(2015, 12, 31), [("MR", "HEAD", "SIEMENS"), ("CT", "HEAD", "SIEMENS")])],
           conditions=[("icd-10", "C34.9"), ("snomed", "C71.9")]),
    Person("fay", "other", date(1990, 5, 5)),
]
EVERYONE = {p.key for p in PEOPLE}


@pytest.fixture
def node(database_url: str) -> Iterator[tuple]:
    """A migrated node database holding PEOPLE: (session factory, {key: id}, engine)."""
    upgrade(database_url, "node")
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    with session_scope(sessions) as session:
        ids = add_people(session, PEOPLE)
    try:
        yield sessions, ids, engine
    finally:
        engine.dispose()


def run(sessions, where: dict, answer: dict | None = None, today: date = TODAY) -> Evaluation:
    query = Query.model_validate({"where": where, **({"answer": answer} if answer else {})})
    with sessions() as session:
        return evaluate(session, query, node_id=SITE, today=today)


def keys_of(ids: np.ndarray, by_id: dict[int, str]) -> set[str]:
    return {by_id[int(i)] for i in ids}


class Checker:
    """Runs queries against the `node` fixture and answers in patient keys."""

    def __init__(self, node) -> None:
        self.sessions, ids, _ = node
        self.by_id = {v: k for k, v in ids.items()}

    def keys(self, where: dict, today: date = TODAY) -> set[str]:
        ev = run(self.sessions, where, today=today)
        assert ev.ids.dtype == np.int64
        assert list(ev.ids) == sorted(set(ev.ids.tolist()))
        assert ev.cells == {}
        return keys_of(ev.ids, self.by_id)

    def cells(self, where: dict, by: list[str], today: date = TODAY) -> dict:
        ev = run(self.sessions, where, {"kind": "stratified", "by": by}, today=today)
        for ids in ev.cells.values():
            assert ids.dtype == np.int64
            assert list(ids) == sorted(set(ids.tolist()))
            assert set(ids.tolist()) <= set(ev.ids.tolist())  # cells hold matching patients
        return {key: keys_of(ids, self.by_id) for key, ids in ev.cells.items()}


def patient(**kw) -> dict:
    return {"type": "patient", **kw}


def age(at="study", **kw) -> dict:
    return patient(age={"at": at, **kw})


def cond(system: str, code: str, prefix: bool = False) -> dict:
    return {"type": "condition", "system": system, "code": code, "prefix": prefix}


def obs(code: str, **kw) -> dict:
    return {"type": "observation", "code": code, **kw}


def img(**kw) -> dict:
    return {"type": "imaging", **kw}


def not_(c: dict) -> dict:
    return {"type": "not", "of": c}


def and_(*cs: dict) -> dict:
    return {"type": "and", "of": list(cs)}


def or_(*cs: dict) -> dict:
    return {"type": "or", "of": list(cs)}


ALL_IMAGED = img(study_from="1900-01-01")

# ---------------------------------------------------------------------------- hand-made rows


def test_patient_sex_and_age_at_a_date(node):
    q = Checker(node)
    assert q.keys(patient(sex="female")) == {"ann", "eve"}
    assert q.keys(patient(sex="other")) == {"fay"}
    # "unknown" includes a sex never recorded, as the `sex` stratum does.
    assert q.keys(patient(sex="unknown")) == {"cat"}
    # Birthday edge: ann turns 45 on 2025-06-15.
    assert q.keys(age("2025-06-15", min=45)) == {"ann", "bob", "eve"}
    assert q.keys(age("2025-06-14", min=45)) == {"bob", "eve"}
    assert q.keys(age("2025-06-15", max=44)) == {"dan", "fay"}
    assert q.keys(age("2025-06-15", max=45)) == {"ann", "dan", "fay"}
    assert q.keys(age("2025-06-15", min=15, max=15)) == {"dan"}
    # 29 February birthday: completed years, in common and in leap years.
    assert q.keys(age("2020-02-29", min=60, max=60)) == {"bob"}
    assert q.keys(age("2021-02-28", min=61, max=61)) == set()
    assert q.keys(age("2021-03-01", min=61, max=61)) == {"bob"}
    # Not yet born is no age; no birth date never matches, even without a minimum.
    assert q.keys(age("2005-01-01", max=100)) == {"ann", "bob", "eve", "fay"}
    assert "cat" not in q.keys(age("2025-06-15", max=150))
    # Sex and age in one criterion: both must hold.
    assert q.keys(patient(sex="male", age={"at": "2025-06-15", "min": 18})) == {"bob"}


def test_age_at_study(node):
    q = Checker(node)
    assert q.keys(age(min=40, max=40)) == {"ann"}  # her second study, on her birthday
    assert q.keys(age(max=39)) == {"ann"}  # her first, the day before
    assert q.keys(age(min=41, max=48)) == set()
    assert q.keys(age(min=60, max=60)) == {"bob"}  # 2021-02-28: not yet 61
    assert q.keys(age(min=61, max=63)) == set()
    assert q.keys(age(min=64, max=64)) == {"eve"}  # 2015-12-30
    assert q.keys(age(min=65)) == {"eve"}  # 2015-12-31, her birthday
    assert q.keys(age(min=49, max=49)) == {"eve"}
    # One study has to satisfy both bounds: eve was 49 and 64, never 50 to 59.
    assert q.keys(age(min=50, max=59)) == set()
    # cat (no birth date, undated study) and dan, fay (no study) never match.
    assert q.keys(age(min=0)) == {"ann", "bob", "eve"}
    assert q.keys(patient(sex="male", age={"min": 60})) == {"bob"}


BIRTHS = [date(1960, 2, 29), date(1959, 2, 28), date(1959, 3, 1), date(1970, 12, 31),
          date(1971, 1, 1), date(1980, 6, 15), date(2000, 2, 29), date(2019, 3, 1)]
DAYS = [date(2019, 2, 28), date(2019, 3, 1), date(2020, 2, 28), date(2020, 2, 29),
        date(2020, 3, 1), date(2020, 12, 31), date(2021, 1, 1)]


def test_ages_in_sql_agree_with_age_at_on_every_boundary(database_url: str):
    """One patient per (birth date, study date) around 29 February and New Year: the SQL
    ages at a date and at study are the completed years of `descriptors.age_at`."""
    upgrade(database_url, "node")
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    pairs = {f"{b}/{d}": (b, d) for b in BIRTHS for d in DAYS}
    try:
        with session_scope(sessions) as session:
            ids = add_people(session, [Person(k, "female", b, studies=[(d, [("CT", None, None)])])
                                       for k, (b, d) in pairs.items()])
        q = Checker((sessions, ids, engine))
        ages = sorted({age_at(b, d) for b, d in pairs.values()} - {-1} | {0, 61})
        for n in ages:
            for lo, hi in [(n, n), (n, None), (None, n)]:
                bounds = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}

                def within(a: int, lo=lo, hi=hi) -> bool:
                    return a >= (lo or 0) and (hi is None or a <= hi)

                assert q.keys(age(**bounds)) == {
                    k for k, (b, d) in pairs.items() if within(age_at(b, d))}, bounds
                for day in (DAYS[0], DAYS[3], DAYS[4]):
                    assert q.keys(age(day.isoformat(), **bounds)) == {
                        k for k, (b, _) in pairs.items() if within(age_at(b, day))}, (day,
                                                                                      bounds)
    finally:
        engine.dispose()


def test_conditions_exact_prefix_and_wildcards(node):
    q = Checker(node)
    assert q.keys(cond("icd-10", "C71", prefix=True)) == {"ann", "bob"}
    assert q.keys(cond("icd-10", "C71")) == {"bob"}
    assert q.keys(cond("icd-10", "C71.9")) == {"ann"}  # not eve's SNOMED-coded "C71.9"
    assert q.keys(cond("snomed", "C71.9")) == {"eve"}
    assert q.keys(cond("snomed", "393564001")) == {"ann"}
    assert q.keys(cond("icd-10", "C", prefix=True)) == {"ann", "bob", "eve"}
    # `_` is a LIKE wildcard: "X1_" must not find X1A2, only the literal X1_2.
    assert q.keys(cond("icd-10", "X1_", prefix=True)) == {"cat"}
    assert q.keys(cond("icd-10", "X1_2")) == {"cat"}
    assert q.keys(cond("icd-10", "X1", prefix=True)) == {"cat", "dan"}
    # Codes compare as written, on both databases (SQLite's LIKE would ignore case).
    assert q.keys(cond("icd-10", "c71", prefix=True)) == set()
    assert q.keys(cond("icd-10", "C71.9.1", prefix=True)) == set()


def test_icd10_finds_the_us_clinical_modification_too(node):
    q = Checker(node)
    assert q.keys(cond("icd-10", "E11", prefix=True)) == {"dan"}
    assert q.keys(cond("icd-10", "E11.65")) == {"dan"}


def test_observations_ranges_and_units(node):
    q = Checker(node)
    assert q.keys(obs("29463-7")) == {"ann", "bob", "cat"}  # a value-less one counts
    # A bound needs its unit (the wire model refuses one without): bob's 95000 is in g.
    assert q.keys(obs("29463-7", min=70, unit="kg")) == {"ann"}
    assert q.keys(obs("29463-7", max=70, unit="kg")) == {"ann"}  # inclusive; no value fails
    assert q.keys(obs("29463-7", min=70.5, unit="kg")) == set()
    assert q.keys(obs("29463-7", min=60, max=80, unit="kg")) == {"ann"}
    assert q.keys(obs("29463-7", min=90000, unit="g")) == {"bob"}
    assert q.keys(obs("29463-7", unit="g")) == {"bob"}
    assert q.keys(obs("29463-7", unit="KG")) == set()
    assert q.keys(obs("4548-4", min=6.5, max=6.5, unit="%")) == {"dan"}
    assert q.keys(obs("8302-2")) == set()


def test_imaging_one_series_matches_every_field(node):
    q = Checker(node)
    assert q.keys(img(modality=["MR"])) == {"ann", "bob", "cat", "eve"}
    assert q.keys(img(modality=["US", "DX"])) == {"bob", "eve"}
    assert q.keys(img(modality=["CT"], body_part=["CHEST"])) == {"ann"}
    # ann has an MR of the head and a CT of the chest, but no MR of the chest.
    assert q.keys(img(modality=["MR"], body_part=["CHEST"])) == set()
    assert q.keys(img(body_part=["BRAIN", "ABDOMEN"])) == {"bob"}
    assert q.keys(img(manufacturer="siemens")) == {"ann", "eve"}
    assert q.keys(img(manufacturer="GE Medical Systems")) == {"ann"}
    assert q.keys(img(manufacturer="Šiemens Ωmega")) == {"bob"}
    assert q.keys(img(study_from="2020-06-15")) == {"ann", "bob"}
    assert q.keys(img(study_to="2015-12-30")) == {"eve"}
    assert q.keys(img(study_from="2020-06-14", study_to="2020-06-14")) == {"ann"}
    # ann's MR was the day before: the date and the modality must be the same study's.
    assert q.keys(img(modality=["MR"], study_from="2020-06-15")) == {"bob"}
    assert q.keys(img(modality=["CT"], manufacturer="SIEMENS", study_from="2015-12-31",
                      study_to="2015-12-31")) == {"eve"}
    assert q.keys(ALL_IMAGED) == {"ann", "bob", "eve"}  # cat's study has no date


def test_and_or_not(node):
    q = Checker(node)
    assert q.keys(and_(patient(sex="female"), cond("icd-10", "C71", prefix=True))) == {"ann"}
    assert q.keys(or_(obs("4548-4"), cond("icd-10", "C34.9"))) == {"dan", "eve"}
    assert q.keys(not_(img(modality=["MR"]))) == {"dan", "fay"}
    # The complement includes cat, whose sex is NULL in the index.
    assert q.keys(not_(patient(sex="female"))) == {"bob", "cat", "dan", "fay"}
    assert q.keys(not_(not_(patient(sex="female")))) == {"ann", "eve"}
    assert q.keys(not_(age("2025-06-15", min=18))) == {"cat", "dan"}
    assert q.keys(not_(obs("29463-7", min=70, unit="kg"))) == {"bob", "cat", "dan", "eve", "fay"}
    assert q.keys(and_(not_(patient(sex="male")), or_(img(modality=["CT"]), obs("29463-7")))
                  ) == {"ann", "cat", "eve"}
    assert q.keys(or_(and_(patient(sex="male"), not_(ALL_IMAGED)), patient(sex="other"))
                  ) == {"dan", "fay"}
    assert q.keys(or_(not_(cond("icd-10", "C", prefix=True)), cond("icd-10", "C71"))
                  ) == EVERYONE - {"ann", "eve"}


def test_one_statement_per_evaluation(node):
    """The tree is compiled into one statement; a stratified answer adds one more."""
    sessions, _, engine = node
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    where = and_(not_(patient(sex="male")), or_(img(modality=["CT"]), obs("29463-7"),
                                                cond("icd-10", "C71", prefix=True),
                                                age(min=40), age("2020-01-01", max=70)))
    event.listen(engine, "before_cursor_execute", seen)
    try:
        run(sessions, where)
        assert len(statements) == 1
        assert statements[0].lstrip().upper().startswith("SELECT PATIENTS.ID")
        statements.clear()
        run(sessions, where, {"kind": "stratified", "by": ["sex", "modality"]})
        assert len(statements) == 2
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert "SELECT patients.id" in str(matching_patients(
        Query.model_validate({"where": where}).where, today=TODAY))


def test_stratified_by_each_stratum(node):
    q = Checker(node)
    everyone = patient(age={"at": "2025-06-15", "max": 150})
    everyone = or_(everyone, not_(everyone))
    assert q.keys(everyone) == EVERYONE
    assert q.cells(everyone, ["sex"]) == {
        (("sex", "female"),): {"ann", "eve"}, (("sex", "male"),): {"bob", "dan"},
        (("sex", "unknown"),): {"cat"}, (("sex", "other"),): {"fay"}}
    # At the latest study (ann: 40 on the day; bob: 60; eve: 65 on the day), or at today
    # without a study (dan 15, fay 35); cat has no birth date.
    assert q.cells(everyone, ["age_band"]) == {
        (("age_band", "40-64"),): {"ann", "bob"}, (("age_band", "65+"),): {"eve"},
        (("age_band", "0-17"),): {"dan"}, (("age_band", "18-39"),): {"fay"},
        (("age_band", "unknown"),): {"cat"}}
    assert q.cells(everyone, ["age_band"], today=date(2028, 1, 1))[
        (("age_band", "18-39"),)] == {"dan", "fay"}
    # A patient is in the cell of each of their modalities: the cells overlap (8 entries
    # for 4 imaged patients) and dan and fay, without images, are in none.
    modality = q.cells(everyone, ["modality"])
    assert modality == {
        (("modality", "MR"),): {"ann", "bob", "cat", "eve"},
        (("modality", "CT"),): {"ann", "eve"}, (("modality", "US"),): {"bob"},
        (("modality", "DX"),): {"eve"}}
    assert sum(len(v) for v in modality.values()) == 8
    assert q.cells(everyone, ["site"]) == {(("site", SITE),): EVERYONE}
    assert q.cells(cond("icd-10", "X9"), ["sex"]) == {}  # empty cells are absent


def test_a_strata_domain_is_the_values_enough_of_the_nodes_patients_have(node):
    """Node-wide counts decide the cells of every answer, whatever the query: sex female
    and male (2 each) are strata at a threshold of 2, other and unknown (1 each) are
    structural; at 3 every value is."""
    sessions, _, _ = node
    with session_scope(sessions) as session:
        sex = stratum_domain(session, "sex", node_id=SITE, today=TODAY, min_count=2)
        assert (sex.values, sex.structural) == (["female", "male"], ["other", "unknown"])
        none = stratum_domain(session, "sex", node_id=SITE, today=TODAY, min_count=3)
        assert (none.values, none.structural) == ([], ["female", "male", "other", "unknown"])
        modality = stratum_domain(session, "modality", node_id=SITE, today=TODAY, min_count=2)
        assert (modality.values, modality.structural) == (["CT", "MR"], ["DX", "US"])
        site = stratum_domain(session, "site", node_id=SITE, today=TODAY, min_count=6)
        assert (site.values, site.structural) == ([SITE], [])
        # Rows added outside a sync change the counts at once.
        session.add(Patient(id=999, patient_key="late", sex="other"))
        session.flush()
        later = stratum_domain(session, "sex", node_id=SITE, today=TODAY, min_count=2)
        assert later.values == ["female", "male", "other"]


def test_stratified_by_two(node):
    q = Checker(node)
    assert q.cells(ALL_IMAGED, ["sex", "modality"]) == {
        (("sex", "female"), ("modality", "MR")): {"ann", "eve"},
        (("sex", "female"), ("modality", "CT")): {"ann", "eve"},
        (("sex", "female"), ("modality", "DX")): {"eve"},
        (("sex", "male"), ("modality", "MR")): {"bob"},
        (("sex", "male"), ("modality", "US")): {"bob"}}
    assert q.cells(cond("icd-10", "C", prefix=True), ["age_band", "sex"]) == {
        (("age_band", "40-64"), ("sex", "female")): {"ann"},
        (("age_band", "40-64"), ("sex", "male")): {"bob"},
        (("age_band", "65+"), ("sex", "female")): {"eve"}}
    assert q.cells(not_(img(modality=["MR"])), ["site", "age_band"]) == {
        (("site", SITE), ("age_band", "0-17")): {"dan"},
        (("site", SITE), ("age_band", "18-39")): {"fay"}}
    assert q.cells(img(modality=["MR"]), ["modality", "age_band"]) == {
        (("modality", "MR"), ("age_band", "40-64")): {"ann", "bob"},
        (("modality", "CT"), ("age_band", "40-64")): {"ann"},
        (("modality", "US"), ("age_band", "40-64")): {"bob"},
        (("modality", "MR"), ("age_band", "unknown")): {"cat"},
        (("modality", "MR"), ("age_band", "65+")): {"eve"},
        (("modality", "CT"), ("age_band", "65+")): {"eve"},
        (("modality", "DX"), ("age_band", "65+")): {"eve"}}


# ---------------------------------------------------------------------------- synthetic node

SYNTH_TODAY = date(2026, 1, 1)


@dataclass(frozen=True)
class SynthNode:
    site: str
    root: Path  # OUT/site-x (fhir/, dicom/)
    url: str
    db: Path


@pytest.fixture(scope="module")
def synth_node(tmp_path_factory: pytest.TempPathFactory) -> SynthNode:
    """60 synthetic patients of one institution, synced from the folder into SQLite."""
    out = tmp_path_factory.mktemp("query-synth")
    summary = generate(out / "synth", institutions=1, patients=60, seed=11)
    site = summary.institutions[0].id
    root = out / "synth" / site
    db = out / "folder.db"
    url = f"sqlite:///{db}"
    run_sync(url, dicom=f"folder:{root / 'dicom'}", fhir=f"ndjson:{root / 'fhir'}")
    return SynthNode(site, root, url, db)


def synth_eval(url: str, where: dict, answer: dict | None = None) -> Evaluation:
    engine = make_engine(url)
    try:
        return run(make_sessionmaker(engine), where, answer, today=SYNTH_TODAY)
    finally:
        engine.dispose()


def plain(node: SynthNode, sql: str) -> list[tuple]:
    with sqlite3.connect(node.db) as con:
        return con.execute(sql).fetchall()


def ndjson(node: SynthNode, kind: str) -> list[dict]:
    lines = (node.root / "fhir" / f"{kind}.ndjson").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def ids(values) -> list[int]:
    return sorted(set(values))


def test_synthetic_clinical_query_matches_the_ndjson(synth_node: SynthNode):
    """ICD-10 chapter I with a BMI of 30 or more, worked out from the FHIR files."""
    by_fhir = dict(plain(synth_node, "SELECT fhir_id, id FROM patients"))
    circulatory = {c["subject"]["reference"].split("/")[-1]
                   for c in ndjson(synth_node, "Condition")
                   for coding in c["code"]["coding"]
                   if coding["system"] in CODE_SYSTEMS["icd-10"]
                   and coding["code"].startswith("I")}
    obese = {o["subject"]["reference"].split("/")[-1] for o in ndjson(synth_node, "Observation")
             if o["code"]["coding"][0]["code"] == "39156-5"
             and o["valueQuantity"]["value"] >= 30 and o["valueQuantity"]["code"] == "kg/m2"}
    want = ids(by_fhir[f] for f in circulatory & obese)
    assert 0 < len(want) < len(by_fhir)
    ev = synth_eval(synth_node.url, and_(cond("icd-10", "I", prefix=True),
                                         obs("39156-5", min=30, unit="kg/m2")))
    assert ev.ids.tolist() == want
    # ... and its complement, over every patient of the node.
    ev = synth_eval(synth_node.url, not_(and_(cond("icd-10", "I", prefix=True),
                                              obs("39156-5", min=30, unit="kg/m2"))))
    assert ev.ids.tolist() == ids(set(by_fhir.values()) - set(want))


def test_synthetic_imaging_and_age_match_plain_sql(synth_node: SynthNode):
    everyone = {pid for (pid,) in plain(synth_node, "SELECT id FROM patients")}
    mr_brain = {pid for (pid,) in plain(synth_node, """
        SELECT DISTINCT st.patient_id FROM series se JOIN studies st ON se.study_id = st.id
        WHERE se.modality = 'MR' AND se.body_part = 'BRAIN'""")}
    female = {pid for (pid,) in plain(synth_node,
                                      "SELECT id FROM patients WHERE sex = 'female'")}
    want = ids(mr_brain - female)
    assert 0 < len(want) < len(everyone)
    ev = synth_eval(synth_node.url, and_(img(modality=["MR"], body_part=["BRAIN"]),
                                         not_(patient(sex="female"))))
    assert ev.ids.tolist() == want

    # A CT anywhere, and some study (any modality) at 40 to 64, by Python's age_at.
    rows = plain(synth_node, """
        SELECT p.id, p.birth_date, st.study_date, st.modalities
        FROM patients p JOIN studies st ON st.patient_id = p.id""")
    ct = {pid for pid, _, _, mods in rows if "CT" in mods.split("\\")}
    aged = {pid for pid, birth, day, _ in rows if birth and day
            and 40 <= age_at(date.fromisoformat(birth), date.fromisoformat(day)) <= 64}
    want = ids(ct & aged)
    assert 0 < len(want) < len(ct)
    ev = synth_eval(synth_node.url, and_(img(modality=["CT"]), age(min=40, max=64)))
    assert ev.ids.tolist() == want

    # Series of one manufacturer within a date range.
    want = ids(pid for (pid,) in plain(synth_node, """
        SELECT st.patient_id FROM series se JOIN studies st ON se.study_id = st.id
        WHERE upper(se.manufacturer) = 'SIEMENS'
          AND st.study_date BETWEEN '2019-01-01' AND '2022-12-31'"""))
    assert 0 < len(want)
    ev = synth_eval(synth_node.url, img(manufacturer="Siemens", study_from="2019-01-01",
                                        study_to="2022-12-31"))
    assert ev.ids.tolist() == want


def _band(age: int) -> str:
    return next(name for name, (lo, hi) in AGE_BANDS.items() if lo <= age <= hi)


def test_synthetic_stratified_cells_match_python(synth_node: SynthNode):
    where = or_(cond("icd-10", "I10"), img(modality=["CT", "PT"]))
    ev = synth_eval(synth_node.url, where, {"kind": "stratified", "by": ["sex", "age_band"]})
    hypertensive = {pid for (pid,) in plain(synth_node, """
        SELECT patient_id FROM conditions
        WHERE system = 'http://hl7.org/fhir/sid/icd-10' AND code = 'I10'""")}
    ct_pt = {pid for (pid,) in plain(synth_node, """
        SELECT st.patient_id FROM series se JOIN studies st ON se.study_id = st.id
        WHERE se.modality IN ('CT', 'PT')""")}
    chosen = hypertensive | ct_pt
    assert ev.ids.tolist() == ids(chosen)
    latest: dict[int, date] = {}
    for pid, day in plain(synth_node, "SELECT patient_id, study_date FROM studies"):
        if day:
            latest[pid] = max(latest.get(pid, date.min), date.fromisoformat(day))
    want: dict[tuple, list[int]] = defaultdict(list)
    for pid, sex, birth in plain(synth_node, "SELECT id, sex, birth_date FROM patients"):
        if pid in chosen:
            band = _band(age_at(date.fromisoformat(birth), latest.get(pid, SYNTH_TODAY)))
            want[(("sex", sex or "unknown"), ("age_band", band))].append(pid)
    assert len(want) > 2
    assert {k: v.tolist() for k, v in ev.cells.items()} == {k: ids(v) for k, v in want.items()}

    ev = synth_eval(synth_node.url, where, {"kind": "stratified", "by": ["modality"]})
    want = defaultdict(list)
    for pid, modality in plain(synth_node, """
            SELECT DISTINCT st.patient_id, se.modality
            FROM series se JOIN studies st ON se.study_id = st.id"""):
        if pid in chosen:
            want[(("modality", modality),)].append(pid)
    assert {k: v.tolist() for k, v in ev.cells.items()} == {k: ids(v) for k, v in want.items()}
    assert sum(len(v) for v in ev.cells.values()) > len(ev.ids)  # the cells overlap


# ---------------------------------------------------------------------------- folder vs Orthanc

IMAGING_QUERIES = [
    (img(modality=["MR"]), None),
    (img(modality=["CT", "PT"], body_part=["WHOLEBODY", "CHEST"]), None),
    (img(manufacturer="siemens", body_part=["BRAIN"]), None),
    (img(study_from="2019-01-01", study_to="2021-12-31"), None),
    (and_(img(modality=["DX"]), not_(img(modality=["CT"]))), None),
    (img(study_from="2015-01-01"), {"kind": "stratified", "by": ["modality"]}),
    (img(modality=["MR", "CT", "US"]), {"kind": "stratified", "by": ["modality", "age_band"]}),
]


@pytest.fixture(scope="module")
def dimse_node(synth_node: SynthNode, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The synthetic node's DICOM uploaded to an Orthanc of this module's own (the session
    one holds other tests' uploads) and synced from it over DIMSE, with the same FHIR."""
    where = tmp_path_factory.mktemp("query-orthanc")
    files = sorted((synth_node.root / "dicom").rglob("*.dcm"))
    with orthanc_server(where / "orthanc") as pacs:
        assert pacs.upload(files) == len(files)
        url = f"sqlite:///{where / 'dimse.db'}"
        report = run_sync(url, dicom=f"dimse://{pacs.aet}@127.0.0.1:{pacs.dicom_port}",
                          fhir=f"ndjson:{synth_node.root / 'fhir'}")
        assert report.skipped == 0
    return url


@pytest.mark.orthanc
def test_imaging_queries_agree_between_folder_and_orthanc(synth_node: SynthNode,
                                                          dimse_node: str):
    folder_keys = dict(plain(synth_node, "SELECT id, patient_key FROM patients"))
    with sqlite3.connect(dimse_node.removeprefix("sqlite:///")) as con:
        dimse_keys = dict(con.execute("SELECT id, patient_key FROM patients").fetchall())
    # The FHIR files number the patients, so the ids are the same in both indexes.
    assert dimse_keys == folder_keys
    for where, answer in IMAGING_QUERIES:
        from_folder = synth_eval(synth_node.url, where, answer)
        from_orthanc = synth_eval(dimse_node, where, answer)
        assert 0 < len(from_folder.ids) < len(folder_keys), where
        assert from_orthanc == from_folder, where
        if answer:
            assert len(from_folder.cells) > 1
