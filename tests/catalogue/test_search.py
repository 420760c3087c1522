"""Catalogue search through the public API: text, facets, age overlap, pagination, refusals.

Every test runs on SQLite (FTS5) and on PostgreSQL (tsvector + GIN) with the same
expectations, which is what "behaves the same on both" means here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from catalogue import service
from catalogue.schemas import CurationIn
from spe.app import create_central_app
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.settings import Settings
from spe.wire.descriptors import Completeness, DatasetDescriptor, ValueCount

SEARCH = "/api/v1/catalogue/search"


def descriptor(node_id: str, name: str, *, patients: int | None, ages: tuple[int, int] | None,
               modalities: dict[str, int], body_parts: dict[str, int],
               conditions: dict[str, int]) -> DatasetDescriptor:
    vc = lambda d: [ValueCount(value=k, count=v) for k, v in d.items()]  # noqa: E731
    return DatasetDescriptor(
        node_id=node_id, node_name=name, generated_at=datetime.now(UTC),
        suppression_threshold=10, patients=patients, studies=(patients or 0) * 2 or None,
        min_age=ages[0] if ages else None, max_age=ages[1] if ages else None,
        temporal_start=date(2015, 1, 1), temporal_end=date(2024, 6, 30),
        modalities=vc(modalities), body_parts=vc(body_parts), conditions=vc(conditions),
        coding_systems=["http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10"],
    )


# Five institutions with distinct imaging and case mixes.
DESCRIPTORS = [
    descriptor("neuro", "Neurology Centre Nord", patients=400, ages=(18, 88),
               modalities={"MR": 900, "CT": 120}, body_parts={"BRAIN": 950, "HEAD": 70},
               conditions={"C71": 60, "G35": 40}),
    descriptor("onco", "Oncology Institute Sud", patients=350, ages=(25, 92),
               modalities={"CT": 500, "PT": 200, "MG": 150},
               body_parts={"CHEST": 300, "BREAST": 150, "WHOLEBODY": 200},
               conditions={"C50": 80, "C34": 50}),
    descriptor("cardio", "Heart and Lung Hospital", patients=300, ages=(40, 95),
               modalities={"CT": 400, "US": 300, "DX": 100},
               body_parts={"CHEST": 450, "HEART": 300},
               conditions={"I21": 70, "J44": 30}),
    descriptor("kids", "Children's Hospital", patients=200, ages=(0, 17),
               modalities={"MR": 150, "US": 250, "DX": 200},
               body_parts={"BRAIN": 100, "ABDOMEN": 200},
               conditions={"J45": 40}),
    descriptor("small", "Rural Clinic", patients=None, ages=None,
               modalities={"DX": 12}, body_parts={"CHEST": 12}, conditions={}),
]


@pytest.fixture
def catalogue_db(database_url: str) -> str:
    upgrade(database_url, "central")
    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            service.harvest(session, DESCRIPTORS, actor="tester")
            service.curate(session, "neuro/imaging-and-clinical-records", CurationIn(
                title="Glioma and multiple sclerosis imaging cohort",
                keywords=["neuro-oncology", "brain tumour", "MRI"]), actor="tester")
            service.curate(session, "onco/imaging-and-clinical-records", CurationIn(
                description="Staging CT and PET of adults treated for breast and lung "
                            "cancer; some glioma referrals.", keywords=["oncology"]),
                actor="tester")
    finally:
        engine.dispose()
    return database_url


@pytest.fixture
def client(catalogue_db: str, tmp_path: Path):
    app = create_central_app(Settings(data_dir=tmp_path, database_url=catalogue_db))
    with TestClient(app) as c:
        yield c


def ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [hit["node_id"] for hit in resp.json()["results"]]


def facet(resp, name: str) -> dict[str, int]:
    return {f["value"]: f["count"] for f in resp.json()["facets"][name]}


def test_everything_is_listed_without_a_query_most_individuals_first(client):
    resp = client.get(SEARCH)
    assert ids(resp) == ["neuro", "onco", "cardio", "kids", "small"]
    body = resp.json()
    assert (body["total"], body["page"], body["pages"]) == (5, 1, 1)
    assert facet(resp, "institution") == {n: 1 for n in ("neuro", "onco", "cardio", "kids",
                                                         "small")}
    assert facet(resp, "modality") == {"CT": 3, "DX": 3, "MR": 2, "US": 2, "PT": 1, "MG": 1}
    assert facet(resp, "access_rights") == {"NON_PUBLIC": 5}
    assert facet(resp, "age_band") == {"0-17": 1, "18-39": 2, "40-64": 3, "65+": 3}
    labels = {f["value"]: f["label"] for f in body["facets"]["institution"]}
    assert labels["kids"] == "Children's Hospital"


def test_a_title_match_outranks_a_description_match(client):
    # "glioma" is in neuro's curated title and only in onco's description.
    assert ids(client.get(SEARCH, params={"q": "glioma"})) == ["neuro", "onco"]


def test_words_are_anded_stemmed_and_the_last_is_a_prefix(client):
    assert ids(client.get(SEARCH, params={"q": "breast canc"})) == ["onco"]
    assert ids(client.get(SEARCH, params={"q": "gliomas"})) == ["neuro", "onco"]  # stemmed
    assert ids(client.get(SEARCH, params={"q": "the heart"})) == ["cardio"]  # stop word
    assert ids(client.get(SEARCH, params={"q": "glioma heart"})) == []


def test_text_of_the_harvested_metrics_is_searchable(client):
    # Node name, modalities and ICD-10 categories are part of the document.
    assert ids(client.get(SEARCH, params={"q": "rural"})) == ["small"]
    assert ids(client.get(SEARCH, params={"q": "J45"})) == ["kids"]


@pytest.mark.parametrize(("q", "holders"), [
    # ICD-10 chapters and blocks: C71 and C50/C34 are neoplasms; a health category's words.
    ("oncology", ["neuro", "onco"]),
    ("cancer", ["neuro", "onco"]),
    ("malignant neoplasm of brain", ["neuro"]),  # C71's WHO title
    ("cardiology", ["cardio"]),  # I21
    ("heart", ["cardio"]),  # HEART body part, I21
    ("lung", ["cardio", "kids", "onco", "small"]),  # CHEST, C34, J44, J45
    ("neuro", ["kids", "neuro"]),  # BRAIN, C71, G35
    # Modality names and synonyms, body parts, and several words across fields.
    ("MRI", ["kids", "neuro"]),
    ("magnetic resonance", ["kids", "neuro"]),
    ("brain MRI", ["kids", "neuro"]),
    ("computed tomography", ["cardio", "neuro", "onco"]),
    ("PET", ["onco"]),
    ("mammography", ["onco"]),
    ("breast cancer", ["onco"]),
    ("dermatology", []),  # a real word, but nothing held is of it
    ("xyzzy", []),
])
def test_what_people_type_finds_the_datasets_that_hold_it(client, q, holders):
    assert sorted(ids(client.get(SEARCH, params={"q": q}))) == holders


def test_condition_facets_carry_their_who_titles(client):
    body = client.get(SEARCH).json()
    labels = {f["value"]: f["label"] for f in body["facets"]["condition"]}
    assert labels["C71"] == "C71 Malignant neoplasm of brain"
    assert labels["G35"] == "G35 Multiple sclerosis"
    assert labels["J45"] == "J45 Asthma"
    areas = {f["value"]: f["count"] for f in body["facets"]["clinical_area"]}
    assert areas["oncology"] == 2
    assert areas["respiratory"] == 3  # C34, J44, J45
    resp = client.get(SEARCH, params={"clinical_area": "neurology"})
    assert ids(resp) == ["neuro"]
    ds = client.get("/api/v1/catalogue/datasets/neuro/imaging-and-clinical-records").json()
    assert {c["value"]: c["title"] for c in ds["conditions"]} == {
        "C71": "Malignant neoplasm of brain", "G35": "Multiple sclerosis"}
    assert {m["value"]: m["name"] for m in ds["modalities"]} == {
        "MR": "Magnetic resonance", "CT": "Computed tomography"}


def test_query_syntax_is_never_passed_through(client):
    for q in ['"', "glioma OR heart", "NEAR(a b)", "a:*", "x' OR 1=1 --", "(", "*", "&|!"]:
        resp = client.get(SEARCH, params={"q": q})
        assert resp.status_code == 200, (q, resp.text)
    assert ids(client.get(SEARCH, params={"q": "glioma OR heart"})) == []


def test_a_facet_filter_narrows_results_and_keeps_its_own_alternatives(client):
    resp = client.get(SEARCH, params={"modality": "MR"})
    assert sorted(ids(resp)) == ["kids", "neuro"]
    # The modality facet still counts over the whole catalogue (other facets unfiltered) ...
    assert facet(resp, "modality")["CT"] == 3
    assert [f["value"] for f in resp.json()["facets"]["modality"] if f["selected"]] == ["MR"]
    # ... while the other facets count only the MR datasets.
    assert facet(resp, "body_part") == {"BRAIN": 2, "HEAD": 1, "ABDOMEN": 1}


def test_values_of_one_facet_are_ored_and_facets_anded(client):
    assert sorted(ids(client.get(SEARCH, params={"modality": ["MR", "PT"]}))) == [
        "kids", "neuro", "onco"]
    resp = client.get(SEARCH, params={"modality": ["MR", "PT"], "body_part": "CHEST"})
    assert ids(resp) == ["onco"]
    assert facet(resp, "body_part") == {"BRAIN": 2, "CHEST": 1, "HEAD": 1, "ABDOMEN": 1,
                                        "BREAST": 1, "WHOLEBODY": 1}
    assert ids(client.get(SEARCH, params={"condition": "C50", "q": "breast"})) == ["onco"]
    assert ids(client.get(SEARCH, params={"institution": "cardio",
                                          "health_category": "nope"})) == []


def test_age_range_overlap(client):
    assert sorted(ids(client.get(SEARCH, params={"age_min": 10, "age_max": 20}))) == [
        "kids", "neuro"]
    assert sorted(ids(client.get(SEARCH, params={"age_min": 93}))) == ["cardio"]
    # A dataset whose ages are suppressed never matches an age filter.
    assert "small" not in ids(client.get(SEARCH, params={"age_max": 150}))
    assert sorted(ids(client.get(SEARCH, params={"age_band": "0-17"}))) == ["kids"]


def test_pages_are_stable_and_complete(client):
    seen = []
    for page in (1, 2, 3):
        resp = client.get(SEARCH, params={"size": 2, "page": page, "sort": "title"})
        body = resp.json()
        assert (body["total"], body["pages"]) == (5, 3)
        seen += ids(resp)
    assert len(seen) == len(set(seen)) == 5
    again = [h for p in (1, 2, 3)
             for h in ids(client.get(SEARCH, params={"size": 2, "page": p, "sort": "title"}))]
    assert again == seen
    assert ids(client.get(SEARCH, params={"page": 4, "size": 2})) == []


@pytest.mark.parametrize(("params", "named"), [
    ({"size": 101}, "size"),
    ({"size": 0}, "size"),
    ({"page": 0}, "page"),
    ({"page": "two"}, "page"),
    ({"sort": "random"}, "sort"),
    ({"access_rights": "OPEN"}, "access_rights"),
    ({"age_band": "30-40"}, "age_band"),
    ({"age_min": -1}, "age_min"),
    ({"age_min": 60, "age_max": 20}, "age_min"),
    ({"q": "x" * 201}, "q"),
    ({"modalty": "MR"}, "modalty"),  # a typo is refused, not ignored
])
def test_malformed_parameters_get_a_422_naming_them(client, params, named):
    resp = client.get(SEARCH, params=params)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid_request"
    assert named in str(body["detail"])


def test_curation_is_searchable_at_once_and_survives_a_harvest(catalogue_db, client):
    engine = make_engine(catalogue_db)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            service.curate(session, "cardio/imaging-and-clinical-records",
                           CurationIn(keywords=["angioplasty"]), actor="tester")
        assert ids(client.get(SEARCH, params={"q": "angioplasty"})) == ["cardio"]
        with session_scope(make_sessionmaker(engine)) as session:
            service.harvest(session, DESCRIPTORS, actor="tester")
        assert ids(client.get(SEARCH, params={"q": "angioplasty"})) == ["cardio"]
        # Re-harvesting rebuilt the facet rows instead of adding to them.
        assert facet(client.get(SEARCH), "modality")["CT"] == 3
    finally:
        engine.dispose()


def test_hits_carry_a_quality_label_and_the_dataset_its_dimensions(client):
    hit = client.get(SEARCH, params={"q": "glioma"}).json()["results"][0]
    assert hit["quality"]["label"] in {"bronze", "silver", "gold", "platinum"}
    ds = client.get("/api/v1/catalogue/datasets/small/imaging-and-clinical-records").json()
    dims = {d["name"]: d for d in ds["quality"]["dimensions"]}
    assert set(dims) == {"documentation", "technical_quality", "coverage", "access",
                         "enrichment"}
    assert any("suppressed" in note for note in dims["coverage"]["notes"])
    neuro = client.get("/api/v1/catalogue/datasets/neuro/imaging-and-clinical-records").json()
    assert neuro["quality"]["score"] > ds["quality"]["score"]


def test_a_weak_dimension_caps_the_label():
    from catalogue.models import Dataset
    from catalogue.quality import quality_label
    from catalogue.service import _default_curation, _harvested

    d = DESCRIPTORS[0].model_copy(update={
        "manufacturers": [ValueCount(value="SIEMENS", count=900)],
        "completeness": Completeness(study_body_part=1.0, study_date=1.0,
                                     patient_birth_date=1.0, patient_sex=1.0)})
    dataset = Dataset(identifier=d.identifier, node_id=d.node_id, collection=d.collection,
                      **_default_curation(d), **_harvested(d, datetime.now(UTC)))
    strong = quality_label(dataset)
    assert strong.label == "gold"  # uncurated: documentation 0.6, the rest near 1
    dataset.coding_systems, dataset.body_parts, dataset.manufacturers = [], [], []
    weak = quality_label(dataset)  # enrichment 0: bronze, so the label is silver at most
    assert weak.score >= 0.5
    assert weak.label in {"silver", "bronze"}
