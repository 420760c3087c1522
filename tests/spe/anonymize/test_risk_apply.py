"""spe.anonymize.risk_apply: a reduction written into FHIR NDJSON and DICOM files says no
more than the reduced records, and a suppressed patient leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from spe.anonymize.extract import AGE_BAND_URL, ICD10, load_dicom_extract, load_fhir_extract
from spe.anonymize.risk_apply import apply_reduction

SNOMED = "http://snomed.info/sct"


def _ndjson(path: Path, resources: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _image(folder: Path, patient_id: str, *, sex: str = "F", age: str = "049Y",
           born: str = "19700101", study: str = "20190305") -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientSex = patient_id, sex
    ds.PatientBirthDate, ds.PatientAge, ds.StudyDate = born, age, study
    path = folder / f"{patient_id}-{generate_uid()[-6:]}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _patient(pid: str, mrn: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1970",
            "identifier": [{"system": "urn:mrn", "value": mrn}],
            "address": [{"use": "home", "postalCode": "28029", "country": "ES"}]}


def _condition(cid: str, pid: str, code: str) -> dict:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": SNOMED, "code": "123", "display": "Exact thing"},
                                {"system": ICD10, "code": code, "display": "Exact"}],
                     "text": "Exact thing"}}


def _extract(tmp_path: Path) -> tuple[Path, Path, dict[str, Path]]:
    fhir, dicom = tmp_path / "fhir", tmp_path / "dicom"
    fhir.mkdir()
    dicom.mkdir()
    _ndjson(fhir / "Patient.ndjson", [_patient("p1", "MRN-1"), _patient("p2", "MRN-2")])
    _ndjson(fhir / "Condition.ndjson", [_condition("c1", "p1", "C71.9"),
                                        _condition("c2", "p2", "I10"),
                                        _condition("c3", "p1", "I10")])
    _ndjson(fhir / "ImagingStudy.ndjson", [
        {"resourceType": "ImagingStudy", "id": "s1", "subject": {"reference": "Patient/p1"}},
        {"resourceType": "ImagingStudy", "id": "s2", "subject": {"reference": "Patient/p2"}}])
    images = {"p1": _image(dicom, "MRN-1"), "p2": _image(dicom, "MRN-2")}
    return fhir, dicom, images


def test_a_suppressed_patient_leaves_nothing_and_the_kept_one_is_generalised(tmp_path):
    fhir, dicom, images = _extract(tmp_path)
    kept = [{"id": "p1", "age": "40-59", "sex": "*", "region": "ES:2", "codes": ("C71",)}]
    levels = {"age": 3, "sex": 1, "region": 3, "codes": 1}
    applied = apply_reduction(fhir, dicom, patient_ids=["p1", "p2"], kept=kept,
                              levels=levels, rare={"C71.9"})
    assert applied.suppressed_patients == 1
    assert applied.dicom_removed == 1
    assert not images["p2"].exists()
    [patient] = _read(fhir / "Patient.ndjson")
    assert patient["id"] == "p1"
    assert "birthDate" not in patient
    assert "gender" not in patient
    assert patient["extension"] == [{"url": AGE_BAND_URL, "valueString": "40-59"}]
    assert patient["address"] == [{"use": "home", "postalCode": "2", "country": "ES"}]
    text = "".join(p.read_text() for p in fhir.glob("*.ndjson"))
    assert "Patient/p2" not in text  # every resource of the suppressed patient is gone
    conditions = {c["id"]: c for c in _read(fhir / "Condition.ndjson")}
    assert conditions["c1"]["code"] == {"coding": [{"system": ICD10, "code": "C71"}]}
    assert conditions["c3"]["code"]["coding"][1]["code"] == "I10"  # common: as it was
    ds = pydicom.dcmread(images["p1"])
    for tag in ("PatientBirthDate", "PatientAge", "PatientSex"):
        assert tag not in ds
    assert ds.StudyDate == "20190305"
    # Measured again, the file says what the reduced record says.
    [record] = load_fhir_extract(fhir)
    assert (record["age"], record["sex"], record["region"]) == ("40-59", None, "ES:2")


def test_rare_codes_at_star_take_their_conditions_and_nothing_else_moves(tmp_path):
    fhir, dicom, images = _extract(tmp_path)
    before = pydicom.dcmread(images["p1"])
    kept = [{"id": "p1", "age": 49, "sex": "female", "region": "ES:28029", "codes": ()},
            {"id": "p2", "age": 49, "sex": "female", "region": "ES:28029", "codes": ("I10",)}]
    levels = {"age": 0, "sex": 0, "region": 0, "codes": 2}
    applied = apply_reduction(fhir, dicom, patient_ids=["p1", "p2"], kept=kept,
                              levels=levels, rare={"C71.9"})
    assert applied.resources_removed == 1
    assert applied.dicom_rewritten == 0
    assert sorted(c["id"] for c in _read(fhir / "Condition.ndjson")) == ["c2", "c3"]
    assert [p["birthDate"] for p in _read(fhir / "Patient.ndjson")] == ["1970", "1970"]
    assert pydicom.dcmread(images["p1"]).PatientAge == before.PatientAge


def test_dicom_headers_give_a_record_per_patient_id(tmp_path):
    """A DICOM-only extract is measured from what its headers still say."""
    dicom = tmp_path / "dicom"
    (dicom / "deep").mkdir(parents=True)
    _image(dicom, "A", age="067Y")
    _image(dicom / "deep", "A", age="068Y", study="20200101")  # aged at the first study
    _image(dicom, "B", sex="M", age="018M")
    _image(dicom, "C", sex="", age="", born="19800615", study="20200614")
    _image(dicom, "D", sex="M")
    _image(dicom, "D", sex="F")  # headers that disagree: the sex is no identifier
    _image(dicom, "LINKED")
    (dicom / "junk.dcm").write_bytes(b"not dicom")
    records = load_dicom_extract(dicom, skip_ids={"LINKED"})
    assert records == [
        {"id": "A", "age": 67, "sex": "female", "region": None, "codes": ()},
        {"id": "B", "age": 1, "sex": "male", "region": None, "codes": ()},
        {"id": "C", "age": 39, "sex": None, "region": None, "codes": ()},
        {"id": "D", "age": 49, "sex": None, "region": None, "codes": ()},
    ]


def test_a_patient_known_only_from_dicom_is_suppressed_by_patient_id(tmp_path):
    fhir, dicom, images = _extract(tmp_path)
    orphan = _image(dicom, "MRN-9", sex="M", age="090Y")
    kept = [{"id": "p1", "age": 49, "sex": "female", "region": "ES:28029", "codes": ()},
            {"id": "p2", "age": 49, "sex": "female", "region": "ES:28029", "codes": ()}]
    applied = apply_reduction(fhir, dicom, patient_ids=["p1", "p2", "MRN-9"], kept=kept,
                              levels={}, rare=set())
    assert applied.suppressed_patients == 1
    assert applied.dicom_removed == 1
    assert not orphan.exists()
    assert all(path.exists() for path in images.values())
    assert [p["id"] for p in _read(fhir / "Patient.ndjson")] == ["p1", "p2"]


def test_suppressing_a_patient_spares_one_whose_id_starts_alike(tmp_path):
    fhir, dicom, _ = _extract(tmp_path)
    _ndjson(fhir / "Patient.ndjson", [_patient("p1", "MRN-1"), _patient("p10", "MRN-10")])
    _ndjson(fhir / "Condition.ndjson", [_condition("c1", "p1", "I10"),
                                        _condition("c10", "p10", "I10")])
    kept = [{"id": "p10", "age": 49, "sex": "female", "region": "ES:28029", "codes": ()}]
    apply_reduction(fhir, dicom, patient_ids=["p1", "p10"], kept=kept, levels={}, rare=set())
    assert [c["id"] for c in _read(fhir / "Condition.ndjson")] == ["c10"]
