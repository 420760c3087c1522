"""`spe deid dicom` and `spe deid fhir`: whole trees, real and broken files, bad arguments."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from typer.testing import CliRunner

from spe.anonymize import fhir_batch
from spe.anonymize.dicom.files import walk
from spe.anonymize.pseudonyms import PermitKey
from spe.cli.main import app
from spe.synth import generate

runner = CliRunner()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, institutions=1, patients=10, seed=3)
    return root / "site-a"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "permit.key"
    path.write_bytes(os.urandom(32))
    return path


def deid(*args: object):
    result = runner.invoke(app, ["deid", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def outputs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def read_report(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def check_report_sums(report: dict, out: Path, duplicates: bool = False) -> None:
    """The outcomes add up; each done file has its output, unless it was an identical copy
    of another input (`duplicates`: pydicom ships a few)."""
    listed = [e["file"] for e in report["excluded_files"] + report["failed_files"]]
    assert len(listed) == len(set(listed)), "a file is in more than one outcome"
    assert report["excluded"] == len(report["excluded_files"])
    assert report["failed"] == len(report["failed_files"])
    assert report["done"] + report["excluded"] + report["failed"] == report["files"]
    assert all(e["reason"] for e in report["excluded_files"] + report["failed_files"])
    assert all("Traceback" not in e["reason"] for e in report["failed_files"])
    if duplicates:
        copies = [w for w in report["warnings"] if "already in DST" in w["warning"]]
        assert len(outputs(out)) == report["done"] - len(copies)
    else:
        assert len(outputs(out)) == report["done"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or "partial" in p.name]


def test_synthetic_site(synth: Path, key_file: Path, tmp_path: Path):
    src = synth / "dicom"
    out, report_file = tmp_path / "out", tmp_path / "report.json"
    result = deid("dicom", src, out, "--key-file", key_file, "--workers",
                  "2", "--report", report_file)
    assert result.exit_code == 0, result.output
    assert "done" in result.output
    assert "files/s" in result.output
    report = read_report(report_file)
    inputs = sorted(walk(src))
    assert report["files"] == len(inputs) > 50
    assert report["failed"] == 0, report["failed_files"]
    check_report_sums(report, out)

    burned_in = set()
    secrets: set[str] = set()
    for path in inputs:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.get("BurnedInAnnotation") == "YES":
            burned_in.add(path.relative_to(src).as_posix())
        secrets.update([str(ds.PatientID), str(ds.AccessionNumber), ds.StudyInstanceUID,
                        ds.SeriesInstanceUID, ds.SOPInstanceUID,
                        *(p for p in str(ds.PatientName).split("^") if len(p) > 2)])
        secrets.update(path.relative_to(src).parts[:2])  # MRN and accession folders
    excluded = {e["file"] for e in report["excluded_files"]}
    assert burned_in
    assert not excluded  # the synthetic text band has a masking rule: masked, not excluded

    produced = outputs(out)
    for name in produced:
        study, series, instance = name.split("/")
        ds = pydicom.dcmread(out / name)
        assert (study, series, instance) == (ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                             f"{ds.SOPInstanceUID}.dcm")
        assert ds.PatientIdentityRemoved == "YES"
        codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
        assert {"113100", "113101"} <= codes  # basic profile, pixels checked or masked
        assert ds.BurnedInAnnotation != "YES"
        assert not [s for s in secrets if s and s in name], name

    again = tmp_path / "again"
    assert deid("dicom", src, again, "--key-file", key_file, "--workers", "1").exit_code == 0
    assert outputs(again) == produced
    other = tmp_path / "other"
    assert deid("dicom", src, other, "--key-file", key_file, "--permit", "permit-2",
                "--workers", "2").exit_code == 0
    assert len(outputs(other)) == len(produced)
    assert not outputs(other) & produced
    assert not {n.split("/")[0] for n in outputs(other)} & {n.split("/")[0] for n in produced}


def test_pydicom_test_files(tmp_path: Path, key_file: Path):
    src, out, report_file = tmp_path / "src", tmp_path / "out", tmp_path / "r.json"
    files = [Path(f) for f in get_testdata_files() if Path(f).is_file()]
    for number, file in enumerate(sorted(files)):
        (src / f"{number:03d}").mkdir(parents=True)  # one folder each: names stay as they are
        shutil.copy(file, src / f"{number:03d}" / file.name)
    result = deid("dicom", src, out, "--key-file", key_file, "--workers",
                  "2", "--report", report_file)
    assert result.exit_code == 0, result.output
    report = read_report(report_file)
    candidates = {p.relative_to(src).as_posix() for p in walk(src)}
    assert report["files"] == len(candidates) > 100
    listed = {e["file"] for e in report["excluded_files"] + report["failed_files"]}
    assert listed <= candidates
    check_report_sums(report, out, duplicates=True)
    assert report["done"] > 50
    for name in outputs(out):
        pydicom.dcmread(out / name, stop_before_pixels=True)


def test_truncated_and_text_files_fail_without_output(tmp_path: Path, key_file: Path):
    src, out, report_file = tmp_path / "src", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    real = Path(get_testdata_file("CT_small.dcm"))
    shutil.copy(real, src / "good.dcm")
    (src / "cut.dcm").write_bytes(real.read_bytes()[:300])
    (src / "cut-pixels.dcm").write_bytes(real.read_bytes()[:20_000])
    (src / "x.dcm").write_text("this is not DICOM\n")
    (src / "notes.txt").write_text("not a candidate\n")
    result = deid("dicom", src, out, "--key-file", key_file, "--workers", "1",
                  "--report", report_file)
    assert result.exit_code == 0, result.output
    report = read_report(report_file)
    failed = {e["file"]: e["reason"] for e in report["failed_files"]}
    assert set(failed) == {"cut.dcm", "cut-pixels.dcm", "x.dcm"}
    assert "truncated" in failed["cut.dcm"]
    assert "truncated" in failed["cut-pixels.dcm"]
    assert "not a DICOM" in failed["x.dcm"]
    assert report["files"] == 4
    assert report["done"] == 1
    check_report_sums(report, out)
    assert "x.dcm" in result.output


@pytest.mark.parametrize("case", ["missing-src", "empty-key", "short-key", "missing-key",
                                  "dst-in-src", "dst-is-src", "unknown-option",
                                  "report-in-dst"])
def test_bad_arguments_exit_2(case: str, tmp_path: Path, key_file: Path):
    src = real_src = tmp_path / "src"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "a.dcm")
    dst = tmp_path / "out"
    extra: list[object] = []
    if case == "missing-src":
        src = tmp_path / "nowhere"
    elif case == "empty-key":
        key_file.write_bytes(b"")
    elif case == "short-key":
        key_file.write_bytes(b"12345")
    elif case == "missing-key":
        key_file = tmp_path / "no.key"
    elif case == "dst-in-src":
        dst = src / "out"
    elif case == "dst-is-src":
        dst = src / "." / ".." / "src"
    elif case == "unknown-option":
        extra = ["--option", "retain-uids", "--option", "keep-everything"]
    elif case == "report-in-dst":
        extra = ["--report", dst / "report.json"]
    result = deid("dicom", src, dst, "--key-file", key_file, "--workers", "1", *extra)
    assert result.exit_code == 2, result.output
    assert "error" in result.output
    if case == "unknown-option":
        assert "keep-everything" in result.output
        assert "clean-descriptors" in result.output
    if case != "dst-is-src":
        assert not dst.exists()
    assert sorted(p.name for p in real_src.iterdir()) == ["a.dcm"]


def test_options_by_name(tmp_path: Path, key_file: Path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "a.dcm")
    original = pydicom.dcmread(src / "a.dcm", stop_before_pixels=True)
    result = deid("dicom", src, out, "--key-file", key_file, "--workers", "1",
                  "--option", "retain-uids", "--option", "clean_descriptors")
    assert result.exit_code == 0, result.output
    [name] = outputs(out)
    assert name == (f"{original.StudyInstanceUID}/{original.SeriesInstanceUID}/"
                    f"{original.SOPInstanceUID}.dcm")
    methods = pydicom.dcmread(out / name).DeidentificationMethod
    assert "Retain UIDs Option" in methods
    assert "Clean Descriptors Option" in methods


def test_possible_burned_in_text_without_the_flag_is_excluded(
        tmp_path: Path, key_file: Path):
    """A Secondary Capture image that does not say whether it has burned-in text, and no
    masking region for it: the cleaner is asked even though the flag is not YES."""
    src, out, report_file = tmp_path / "src", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert "BurnedInAnnotation" not in ds
    ds.Modality = "OT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Manufacturer = "Nobody Knows"
    ds.save_as(src / "sc.dcm")
    result = deid("dicom", src, out, "--key-file", key_file, "--workers", "1",
                  "--report", report_file)
    assert result.exit_code == 0, result.output
    report = read_report(report_file)
    assert [e["file"] for e in report["excluded_files"]] == ["sc.dcm"]
    assert "BurnedInAnnotation" in report["excluded_files"][0]["reason"]
    assert outputs(out) == set()


def patient_values(fhir: Path) -> set[str]:
    values: set[str] = set()
    for line in (fhir / "Patient.ndjson").read_text(encoding="utf-8").splitlines():
        patient = json.loads(line)
        values.update(i["value"] for i in patient["identifier"])
        for name in patient["name"]:
            values.update(n for n in (name["family"], *name["given"]) if len(n) > 2)
    return values


def test_fhir_ndjson(synth: Path, key_file: Path, tmp_path: Path):
    src, out, report_file = tmp_path / "fhir", tmp_path / "outf", tmp_path / "r.json"
    shutil.copytree(synth / "fhir", src)
    names = sorted(p.name for p in src.glob("*.ndjson"))
    lines_in = {n: len((src / n).read_text().splitlines()) for n in names}
    with open(src / "Observation.ndjson", "a", encoding="utf-8") as fp:
        fp.write('{"resourceType": "Observation", "id": \n')  # cut off: not JSON
    result = deid("fhir", src, out, "--key-file", key_file, "--report", report_file)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert len((out / name).read_text().splitlines()) == lines_in[name], name
    report = read_report(report_file)
    assert report["skipped_lines"] == [{
        "file": "Observation.ndjson", "line": lines_in["Observation.ndjson"] + 1,
        "reason": report["skipped_lines"][0]["reason"]}]
    assert "not JSON" in report["skipped_lines"][0]["reason"]
    assert report["types"]["Patient"]["in"] == report["types"]["Patient"]["out"] == 10
    text = "\n".join((out / n).read_text(encoding="utf-8") for n in names)
    for value in patient_values(src):
        assert f'"{value}"' not in text, value
        assert f" {value}" not in text, value

    again = tmp_path / "again"
    assert deid("fhir", src, again, "--key-file", key_file).exit_code == 0
    assert (again / "Patient.ndjson").read_bytes() == (out / "Patient.ndjson").read_bytes()


def test_fhir_in_several_processes_is_the_same_as_in_one(synth: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(fhir_batch, "BATCH", 25)  # many batches from a small site
    key = PermitKey(os.urandom(32))
    one = fhir_batch.deidentify_ndjson(synth / "fhir", tmp_path / "one", key, workers=1)
    three = fhir_batch.deidentify_ndjson(synth / "fhir", tmp_path / "three", key, workers=3)
    assert one.resources_in > 25 * 3
    assert three.types == one.types
    for name in one.files:
        assert (tmp_path / "three" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def _dying_batch(resources: list[dict]) -> list:
    if any(r["resourceType"] == "Condition" for r in resources):
        os._exit(3)  # the process is killed mid-batch
    return fhir_batch._run_batch_unpatched(resources)


def test_a_dead_fhir_worker_loses_no_resource(synth: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch):
    """Every resource ends written or reported: a batch whose process died is skipped with
    the reason, the rest is written, and the run itself ends normally."""
    monkeypatch.setattr(fhir_batch, "BATCH", 25)
    monkeypatch.setattr(fhir_batch, "_run_batch_unpatched", fhir_batch._run_batch, raising=False)
    monkeypatch.setattr(fhir_batch, "_run_batch", _dying_batch)
    report = fhir_batch.deidentify_ndjson(synth / "fhir", tmp_path / "out",
                                          PermitKey(os.urandom(32)), workers=2)
    lost = [s for s in report.skipped if s["reason"].startswith("worker process failed")]
    assert lost
    assert report.types["Condition"]["out"] == 0
    for name in report.files:
        written = len((tmp_path / "out" / name).read_text().splitlines())
        counts = report.types[name.removesuffix(".ndjson")]
        assert written == counts["out"]
        assert counts["in"] == counts["out"] + counts["removed"] + counts["skipped"]
    assert len(report.skipped) == sum(c["skipped"] for c in report.types.values())


@pytest.mark.parametrize("case", ["missing-src", "dst-in-src", "empty-key", "missing-rules"])
def test_fhir_bad_arguments_exit_2(case: str, synth: Path, key_file: Path, tmp_path: Path):
    src = tmp_path / "fhir"
    shutil.copytree(synth / "fhir", src)
    dst = tmp_path / "outf"
    extra: list[object] = []
    if case == "missing-src":
        src = tmp_path / "nowhere"
    elif case == "dst-in-src":
        dst = src / "out"
    elif case == "empty-key":
        key_file.write_bytes(b"")
    elif case == "missing-rules":
        extra = ["--rules", tmp_path / "no-rules.json"]
    result = deid("fhir", src, dst, "--key-file", key_file, *extra)
    assert result.exit_code == 2, result.output
    assert "error" in result.output
    assert not dst.exists()


def test_safe_private_list_keeps_only_the_listed_private_attribute(synth: Path, tmp_path: Path,
                                                                    key_file: Path):
    safe = tmp_path / "safe.json"
    safe.write_text(json.dumps([{"creator": "SPE SYNTH", "element": "0x04"}]))
    out = tmp_path / "out"
    result = deid("dicom", synth / "dicom", out, "--key-file", key_file, "--workers", "1",
                  "--option", "retain-safe-private", "--safe-private", safe)
    assert result.exit_code == 0, result.output
    ds = pydicom.dcmread(next(out.rglob("*.dcm")))
    block = ds.private_block(0x0009, "SPE SYNTH")
    assert block[0x04].value.startswith("Workstation")  # listed: kept
    private = [e.tag for e in ds if e.tag.is_private]
    assert sorted(private) == sorted([block.get_tag(0x04), 0x00090010])  # nothing else
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert "113111" in codes  # Retain Safe Private Option


@pytest.mark.parametrize("content", ['{"creator": "X"}', '[{"creator": "X", "element": 300}]',
                                     "not json"])
def test_bad_safe_private_list_is_refused(synth: Path, tmp_path: Path, key_file: Path,
                                          content: str):
    safe = tmp_path / "safe.json"
    safe.write_text(content)
    out = tmp_path / "out"
    result = deid("dicom", synth / "dicom", out, "--key-file", key_file,
                  "--option", "retain-safe-private", "--safe-private", safe)
    assert result.exit_code == 2
    assert "safe.json" in result.output
    assert not out.exists()


def test_safe_private_list_without_the_option_is_refused(synth: Path, tmp_path: Path,
                                                        key_file: Path):
    safe = tmp_path / "safe.json"
    safe.write_text("[]")
    result = deid("dicom", synth / "dicom", tmp_path / "out", "--key-file", key_file,
                  "--safe-private", safe)
    assert result.exit_code == 2
    assert "retain-safe-private" in result.output
