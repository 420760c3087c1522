"""DICOM and FHIR de-identified with one permit key still describe the same patient.

The synthetic generator links them the way hospitals do (Patient MRN = DICOM PatientID,
ImagingStudy identifier = StudyInstanceUID, ImagingStudy.started = StudyDate/StudyTime).
After de-identification with the same key those links must hold on the pseudonyms, and a
patient's imaging and clinical dates must be shifted by the same number of days; with
another permit's key nothing may link.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pydicom
import pytest

from spe.anonymize.dicom.options import Options
from spe.anonymize.dicom.profile import Deidentifier
from spe.anonymize.fhir import FhirDeidentifier
from spe.anonymize.pseudonyms import PermitKey
from spe.synth import generate

SECRET = b"node secret for the linkage test, 32+ bytes"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("linkage")
    generate(out, institutions=1, patients=12, seed=8)
    return out / "site-a"


def load_fhir(site: Path) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((site / "fhir").glob("*.ndjson"))}


def deidentify(site: Path, key: PermitKey):
    fhir = FhirDeidentifier(None, key).deidentify_all(load_fhir(site))
    engine = Deidentifier(Options(retain_long_modified_dates=True), key)
    images = []
    for path in sorted((site / "dicom").rglob("*.dcm"))[::3]:
        ds = pydicom.dcmread(path)
        original = (ds.PatientID, ds.StudyInstanceUID, ds.StudyDate)
        engine.apply(ds)
        images.append((original, ds))
    return fhir, images


def mrn_of(patient: dict) -> str:
    return next(i["value"] for i in patient["identifier"]
                if any(c["code"] == "MR" for c in i["type"]["coding"]))


def study_uid_of(study: dict) -> str:
    uid = next(i["value"] for i in study["identifier"] if i["system"] == "urn:dicom:uid")
    return uid.removeprefix("urn:oid:")


def as_date(value: str) -> date:
    return date.fromisoformat(value[:10]) if "-" in value[:10] else \
        date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def test_pseudonyms_uids_and_date_shifts_line_up_between_dicom_and_fhir(site: Path):
    key = PermitKey.derive(SECRET, "permit-1")
    fhir, images = deidentify(site, key)
    original = load_fhir(site)
    patients = {mrn_of(p): p for p in fhir["Patient"]}
    studies = {study_uid_of(s): s for s in fhir["ImagingStudy"]}
    original_studies = {study_uid_of(s): s for s in original["ImagingStudy"]}
    assert images
    for (patient_id, study_uid, study_date), ds in images:
        patient = patients[ds.PatientID]  # the DICOM pseudonym is the FHIR MRN pseudonym
        study = studies[ds.StudyInstanceUID]  # ... and the study UIDs map the same way
        assert study["subject"]["reference"] == f"Patient/{patient['id']}"
        assert ds.PatientID != patient_id
        assert ds.StudyInstanceUID != study_uid
        # Both sides moved the study by the same, patient-specific number of days.
        dicom_shift = (as_date(ds.StudyDate) - as_date(study_date)).days
        fhir_shift = (as_date(study["started"])
                      - as_date(original_studies[study_uid]["started"])).days
        assert dicom_shift == fhir_shift == key.date_shift_days(patient_id)
        assert dicom_shift < 0


def test_another_permit_links_nothing(site: Path):
    one, images_one = deidentify(site, PermitKey.derive(SECRET, "permit-1"))
    two, images_two = deidentify(site, PermitKey.derive(SECRET, "permit-2"))
    ids_one = {mrn_of(p) for p in one["Patient"]} | {ds.PatientID for _, ds in images_one}
    ids_two = {mrn_of(p) for p in two["Patient"]} | {ds.PatientID for _, ds in images_two}
    assert not ids_one & ids_two
    uids_one = {ds.StudyInstanceUID for _, ds in images_one}
    uids_two = {ds.StudyInstanceUID for _, ds in images_two}
    assert not uids_one & uids_two
    assert {p["id"] for p in one["Patient"]}.isdisjoint(p["id"] for p in two["Patient"])
