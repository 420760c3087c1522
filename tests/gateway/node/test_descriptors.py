"""The node's dataset descriptor: counts from the index, small counts marked, never 0."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.node.descriptors import age_at, compute_descriptor
from gateway.node.sources.memory import MemoryDicomSource, MemoryFhirSource
from gateway.node.sync import sync_index
from spe.db import session_scope
from tests.gateway.node.test_sync import condition, node_sessions, patient, study  # noqa: F401


@pytest.mark.parametrize(("birth", "on", "age"), [
    (date(1970, 5, 1), date(2020, 4, 30), 49),
    (date(1970, 5, 1), date(2020, 5, 1), 50),
    (date(2000, 2, 29), date(2001, 2, 28), 0),
])
def test_age_at_counts_completed_years(birth, on, age):
    assert age_at(birth, on) == age


@pytest.fixture
def small_index(node_sessions):  # noqa: F811
    fhir = MemoryFhirSource([patient("p1", "MRN1", birth="1950-01-01"),
                             patient("p2", "MRN2", sex="male", birth="1990-06-30"),
                             condition("c1", "Patient/p1")])
    dicom = MemoryDicomSource([study("1.2.1", "MRN1", ("1.2.1.1", "MR", 3)),
                               study("1.2.2", "MRN2", ("1.2.2.1", "CT", 4),
                                     ("1.2.2.2", "CT", 1))])
    with session_scope(node_sessions) as session:
        sync_index(session, dicom=dicom, fhir=fhir)
    return node_sessions


def test_small_counts_are_suppressed_and_named_never_zero(small_index):
    with small_index() as session:
        d = compute_descriptor(session, node_id="site-a", node_name="Site A", threshold=10)
    assert (d.patients, d.studies, d.series, d.instances) == (None, None, None, None)
    assert {"patients", "studies", "series", "instances", "min_age", "max_age",
            "temporal_start", "modalities:CT", "modalities:MR"} <= set(d.suppressed)
    assert (d.min_age, d.max_age, d.temporal_start) == (None, None, None)
    assert [(m.value, m.count) for m in d.modalities] == [("CT", None), ("MR", None)]
    assert d.completeness.patient_sex is None
    # One patient's conditions: not even the coding systems are listed.
    assert d.coding_systems == []
    assert "coding_systems:other" in d.suppressed
    assert d.identifier == "site-a/imaging-and-clinical-records"


def test_counts_at_the_threshold_are_shown(small_index):
    with small_index() as session:
        d = compute_descriptor(session, node_id="site-a", node_name="Site A", threshold=1)
    assert (d.patients, d.studies, d.series, d.instances) == (2, 2, 3, 8)
    # Ages 29 and 70 at the studies of 2020-01-02, rounded inward to whole 5 years; both
    # studies on one day, which no whole month inside it can hold: the dates are withheld.
    assert (d.min_age, d.max_age) == (30, 70)
    assert (d.temporal_start, d.temporal_end) == (None, None)
    assert [(m.value, m.count) for m in d.modalities] == [("CT", 2), ("MR", 1)]
    assert d.coding_systems == ["http://hl7.org/fhir/sid/icd-10", "http://snomed.info/sct"]
    assert d.completeness.patient_birth_date == 1.0
    assert d.suppressed == ["temporal_start", "temporal_end"]


def test_a_descriptor_that_fails_the_readers_check_is_withheld(small_index, monkeypatch):
    # Fail closed: were the suppression to miss a count, the node's own check withholds
    # the whole descriptor rather than publish it.
    import gateway.node.descriptors as descriptors

    monkeypatch.setattr(descriptors, "hidden_cells", lambda *_: set())
    with small_index() as session, pytest.raises(descriptors.DescriptorRefused) as refused:
        compute_descriptor(session, node_id="site-a", node_name="Site A", threshold=10)
    assert "modalities: a count below 10 shown" in str(refused.value)
    assert "CT" not in str(refused.value)  # the place and the rule, never the value


def test_values_each_held_by_one_series_are_not_listed(node_sessions):  # noqa: F811
    # Twelve series, twelve modalities: with the total published, twelve listed values
    # would say each has exactly one series, whatever is suppressed.
    dicom = MemoryDicomSource([study("1.2.1", "MRN1",
                                     *((f"1.2.1.{i}", f"M{i:02}", 1) for i in range(12)))])
    with session_scope(node_sessions) as session:
        sync_index(session, dicom=dicom, fhir=MemoryFhirSource([patient("p1", "MRN1")]))
    with node_sessions() as session:
        d = compute_descriptor(session, node_id="site-a", node_name="Site A", threshold=10)
    assert (d.series, d.modalities) == (12, [])
    assert "modalities:other" in d.suppressed
