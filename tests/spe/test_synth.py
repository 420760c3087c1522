"""The synthetic federation: valid FHIR R4 and DICOM, linked, identifying, deterministic."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydicom import config
from typer.testing import CliRunner

from spe.cli.main import app
from spe.synth import generate
from spe.synth.codes import ICD10, LOINC, SNOMED, UCUM
from spe.synth.dicom import ANNOTATION_ROWS, PRIVATE_CREATOR, PRIVATE_GROUP, instance_dataset
from spe.synth.fhir import RESOURCE_TYPES
from spe.synth.history import plan_patient
from spe.synth.sites import TEMPLATES, make_site
from spe.synth.staff import make_staff

UID = re.compile(r"^2\.25\.[1-9][0-9]*$")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, institutions=2, patients=40, seed=3)
    return out


def ndjson(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def resources(site: Path) -> dict[str, list[dict]]:
    return {t: ndjson(site / "fhir" / f"{t}.ndjson") for t in RESOURCE_TYPES}


def datasets(site: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted((site / "dicom").rglob("*.dcm"))]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_layout_and_manifest_match_the_files(federation: Path):
    manifest = json.loads((federation / "manifest.json").read_text())
    assert manifest["seed"] == 3
    assert manifest["patients_per_institution"] == 40
    assert [s["id"] for s in manifest["institutions"]] == ["site-a", "site-b"]
    for site in manifest["institutions"]:
        root = federation / site["id"]
        found = resources(root)
        assert {t: len(v) for t, v in found.items() if v} == site["resources"]
        assert len(found["Patient"]) == site["patients"] == 40
        assert len(found["ImagingStudy"]) == site["studies"]
        assert len(list((root / "dicom").rglob("*.dcm"))) == site["instances"] > 0


def test_every_resource_is_valid_fhir_r4(federation: Path):
    for site in ("site-a", "site-b"):
        for kind, items in resources(federation / site).items():
            model = get_fhir_model_class(kind)
            for item in items:
                model.model_validate(item)  # raises on any invalid resource


def test_conditions_carry_snomed_and_icd10_and_observations_loinc_with_ucum(federation: Path):
    found = resources(federation / "site-a")
    assert found["Condition"]
    for condition in found["Condition"]:
        assert {c["system"] for c in condition["code"]["coding"]} == {SNOMED, ICD10}
    for observation in found["Observation"]:
        assert observation["code"]["coding"][0]["system"] == LOINC
        assert observation["valueQuantity"]["system"] == UCUM
    patients = {p["id"] for p in found["Patient"]}
    for kind in ("Condition", "Observation", "Procedure", "ImagingStudy"):
        for item in found[kind]:
            assert item["subject"]["reference"].removeprefix("Patient/") in patients


def test_dicom_is_linked_to_patient_and_imaging_study(federation: Path):
    root = federation / "site-b"
    found = resources(root)
    mrns = {ident["value"]: p["id"] for p in found["Patient"] for ident in p["identifier"]
            if ident["system"] == "urn:spe:site-b:mrn"}
    studies = {}
    for study in found["ImagingStudy"]:
        uid = next(i["value"] for i in study["identifier"] if i["system"] == "urn:dicom:uid")
        studies[uid.removeprefix("urn:oid:")] = study
    seen: dict[str, set[str]] = {}
    for ds in datasets(root):
        study = studies[ds.StudyInstanceUID]
        assert study["subject"]["reference"] == f"Patient/{mrns[ds.PatientID]}"
        series = {s["uid"]: s for s in study["series"]}[ds.SeriesInstanceUID]
        assert series["modality"]["code"] == ds.Modality
        assert ds.SOPInstanceUID in {i["uid"] for i in series["instance"]}
        seen.setdefault(ds.StudyInstanceUID, set()).add(ds.SOPInstanceUID)
    assert set(seen) == set(studies)
    for uid, study in studies.items():
        assert len(seen[uid]) == study["numberOfInstances"]


def test_headers_carry_identifying_data_where_real_ones_do(federation: Path):
    all_ds = datasets(federation / "site-a") + datasets(federation / "site-b")
    patients = {p["identifier"][0]["value"]: p
                for site in ("site-a", "site-b")
                for p in resources(federation / site)["Patient"]}
    for ds in all_ds[:50]:
        patient = patients[ds.PatientID]
        assert str(ds.PatientName).split("^")[0] == patient["name"][0]["family"]
        assert ds.PatientBirthDate == patient["birthDate"].replace("-", "")
        assert ds.OtherPatientIDsSequence[1].PatientID == patient["identifier"][1]["value"]
        assert ds.AccessionNumber == ds.RequestAttributesSequence[0].AccessionNumber
        assert ds.InstitutionName
        assert ds.ReferringPhysicianName
        assert ds.OperatorsName
        assert ds.PatientAddress
        assert patient["name"][0]["family"] in ds.PatientComments
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        assert block[0x02].value == ds.PatientID
        assert block[0x10].VR == "SQ"
        assert UID.match(ds.StudyInstanceUID)
        assert UID.match(ds.SeriesInstanceUID)
        assert UID.match(ds.SOPInstanceUID)
        assert len(ds.SOPInstanceUID) <= 64
    burned = [ds for ds in all_ds if ds.BurnedInAnnotation == "YES"]
    assert burned, "some images must carry burned-in text"
    for ds in burned:
        name = str(ds.PatientName).encode()
        top_row = bytes(int(v) for v in ds.pixel_array[0, :len(name)])
        assert top_row == name[:ds.Columns]
        assert ANNOTATION_ROWS < ds.Rows
    modalities = Counter(ds.Modality for ds in all_ds)
    assert {"MR", "CT"} <= set(modalities)
    assert len(modalities) >= 3


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path: Path):
    generate(tmp_path / "one", institutions=1, patients=8, seed=11)
    generate(tmp_path / "two", institutions=1, patients=8, seed=11)
    generate(tmp_path / "three", institutions=1, patients=8, seed=12)
    one = digest(tmp_path / "one" / "site-a")
    assert one == digest(tmp_path / "two" / "site-a")
    assert one != digest(tmp_path / "three" / "site-a")


def test_a_site_does_not_depend_on_how_many_sites_are_generated(tmp_path: Path):
    generate(tmp_path / "one", institutions=1, patients=5, seed=2)
    generate(tmp_path / "two", institutions=2, patients=5, seed=2)
    assert digest(tmp_path / "one" / "site-a") == digest(tmp_path / "two" / "site-a")


def test_the_demo_federation_has_enough_images_and_site_effects():
    """The demo's 3 x 300, planned without writing: what the files would hold."""
    instances = 0
    vendors: dict[str, Counter[str]] = {}
    prevalence: dict[str, Counter[str]] = {}
    for index in range(3):
        site = make_site(index, 1)
        staff = make_staff(site, 1)
        vendors[site.id], prevalence[site.id] = Counter(), Counter()
        for n in range(300):
            record = plan_patient(site, staff, 1, n)
            instances += sum(s.instance_count for s in record.studies)
            vendors[site.id].update(s.device.vendor for s in record.studies)
            prevalence[site.id].update({c.definition.key for c in record.conditions})
    assert 5_000 <= instances <= 9_000
    main_vendor = {site: counts.most_common(1)[0][0] for site, counts in vendors.items()}
    assert len(set(main_vendor.values())) == 3, main_vendor
    # site-a is a neuro centre, site-b an oncology centre, site-c cardiopulmonary.
    assert prevalence["site-a"]["glioma"] > prevalence["site-b"]["glioma"]
    assert prevalence["site-b"]["breast_cancer"] > prevalence["site-a"]["breast_cancer"]
    assert prevalence["site-c"]["copd"] > prevalence["site-a"]["copd"]


def test_header_values_fit_their_value_representations_at_every_site(
        monkeypatch: pytest.MonkeyPatch):
    """pydicom checks a value against its VR (length, characters) when it is set; made to
    raise, it finds over many more patients, without writing files, what dciodvfy finds in
    tests/conformance/test_dciodvfy_synth.py (a 65-character address came up at seed 11)."""
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)
    checked = 0
    for seed in (1, 11):
        for index in range(len(TEMPLATES)):
            site = make_site(index, seed)
            staff = make_staff(site, seed)
            for n in range(40):
                record = plan_patient(site, staff, seed, n)
                for study in record.studies:
                    for series in study.series:
                        instance_dataset(site, record, study, series, series.instances)
                        checked += 1
    assert checked > 1_000


def test_cli_writes_the_federation_and_rejects_bad_arguments(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--institutions", "1",
                                 "--patients", "3", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "manifest.json").exists()
    assert '"patients": 3' in result.output
    bad = runner.invoke(app, ["synth", "--out", str(tmp_path / "t"), "--institutions", "0"])
    assert bad.exit_code == 2
    assert "institutions" in bad.output
    assert not (tmp_path / "t").exists()
    (tmp_path / "a-file").write_text("not a folder")
    blocked = runner.invoke(app, ["synth", "--out", str(tmp_path / "a-file"), "--patients", "1"])
    assert blocked.exit_code == 2
    assert "cannot write" in blocked.output
    assert "Traceback" not in blocked.output
