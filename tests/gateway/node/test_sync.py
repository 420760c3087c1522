"""The node sync over in-memory sources, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.node.index import repository
from gateway.node.sources.base import FhirItem, SeriesRecord, Skipped, StudyRecord
from gateway.node.sources.memory import MemoryDicomSource, MemoryFhirSource
from gateway.node.sync import sync_index
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade


def patient(pid: str, mrn: str, sex: str = "female", birth: str = "1970-05-01") -> FhirItem:
    return FhirItem("Patient", {
        "resourceType": "Patient", "id": pid, "gender": sex, "birthDate": birth,
        "identifier": [{"system": "urn:spe:site-a:mrn", "value": mrn}],
    })


def condition(cid: str, subject: str) -> FhirItem:
    return FhirItem("Condition", {
        "resourceType": "Condition", "id": cid, "subject": {"reference": subject},
        "onsetDateTime": "2019-03-04T10:00:00Z",
        "code": {"coding": [
            {"system": "http://snomed.info/sct", "code": "393564001"},
            {"system": "http://hl7.org/fhir/sid/icd-10", "code": "C71.9"},
        ]},
    })


def study(uid: str, mrn: str, *series: tuple[str, str, int]) -> StudyRecord:
    return StudyRecord(
        study_uid=uid, patient_id=mrn, patient_sex="F", study_date=date(2020, 1, 2),
        series=tuple(SeriesRecord(series_uid=s, modality=m, instance_count=n)
                     for s, m, n in series),
    )


@pytest.fixture
def node_sessions(database_url: str):
    upgrade(database_url, "node")
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_sync_links_images_to_clinical_records(node_sessions):
    fhir = MemoryFhirSource([
        condition("c1", "Patient/p1"),  # before its patient, as in sorted NDJSON files
        patient("p1", "MRN1"),
        patient("p2", "MRN2", sex="male"),
        FhirItem("Observation", {
            "resourceType": "Observation", "id": "o1", "subject": {"reference": "urn:uuid:p2"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "valueQuantity": {"value": 81.5, "code": "kg"},
            "effectiveDateTime": "2021-01-01",
        }),
        Skipped("Patient.ndjson:7", "invalid JSON"),
        condition("c2", "Patient/ghost"),
    ])
    dicom = MemoryDicomSource([
        study("1.2.1", "MRN1", ("1.2.1.1", "MR", 3), ("1.2.1.2", "MR", 2)),
        study("1.2.2", "MRN2", ("1.2.2.1", "CT", 4)),
        study("1.2.3", "UNKNOWN", ("1.2.3.1", "CR", 1)),
        study("1.2.4", "UNKNOWN", ("1.2.4.1", "CR", 1)),  # a second study of that patient
        Skipped("junk.dcm", "not a DICOM file"),
    ])
    with session_scope(node_sessions) as session:
        report = sync_index(session, dicom=dicom, fhir=fhir)
    assert (report.patients, report.studies, report.series, report.instances) == (3, 4, 5, 11)
    assert report.conditions == 1
    assert report.observations == 1
    assert report.studies_without_fhir_patient == 2
    assert report.skipped == 3
    assert {s["where"] for s in report.skipped_examples} == {
        "Patient.ndjson:7", "junk.dcm", "Condition/c2"}
    with node_sessions() as session:
        counts = repository.counts(session)
        assert counts == {"patients": 3, "studies": 4, "series": 5, "conditions": 1,
                          "condition_codings": 2,
                          "observations": 1, "instances": 11}
        assert repository.modality_counts(session) == {"CR": 2, "CT": 1, "MR": 2}


def test_resync_replaces_the_index(node_sessions):
    fhir = MemoryFhirSource([patient("p1", "MRN1")])
    with session_scope(node_sessions) as session:
        sync_index(session, dicom=MemoryDicomSource([study("1.2.1", "MRN1", ("1.2.1.1", "MR", 3))]),
                   fhir=fhir)
    with session_scope(node_sessions) as session:
        report = sync_index(session, dicom=MemoryDicomSource([]), fhir=fhir)
    assert report.studies == 0
    with node_sessions() as session:
        assert repository.counts(session)["studies"] == 0
        assert repository.last_sync_run(session).id == 2


def test_failed_sync_leaves_the_old_index(node_sessions):
    fhir = MemoryFhirSource([patient("p1", "MRN1")])
    with session_scope(node_sessions) as session:
        sync_index(session, dicom=None, fhir=fhir)

    class Broken(MemoryDicomSource):
        def studies(self, progress=None):
            raise RuntimeError("PACS went away")
            yield

    with pytest.raises(RuntimeError), session_scope(node_sessions) as session:
        sync_index(session, dicom=Broken(), fhir=fhir)
    with node_sessions() as session:
        assert repository.counts(session)["patients"] == 1
