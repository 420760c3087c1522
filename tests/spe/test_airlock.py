"""The airlock's automatic checks of a job's output directory (spe/airlock)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import zlib
from datetime import date
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from spe.airlock import (
    ExtractTerms,
    OutputRules,
    check_outputs,
    dominance_violated,
    p_ratio_violated,
    rules_from_policy,
    terms_from_extract,
)
from spe.anonymize.pseudonyms import PermitKey
from spe.policy import EmbeddedEngine, PolicyService
from spe.settings import REPO_ROOT

KEY = PermitKey.derive(b"airlock-test-secret-0123456789", "permit-1")
PATIENTS = [KEY.pseudonym(f"MRN{i:04d}", "patient", 16) for i in range(12)]
STUDY_UIDS = [KEY.uid(f"study-{i}") for i in range(12)]
STUDY_DAY = date(2019, 3, 5)
RULES = OutputRules()


def write_dicom(path: Path, *, patient_id: str, study_uid: str, study_date: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.AccessionNumber = "ACC7781234"
    ds.StudyDate = study_date
    ds.Modality = "MR"
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def extract(tmp_path_factory) -> Path:
    """A tiny de-identified extract: FHIR NDJSON and one DICOM file."""
    root = tmp_path_factory.mktemp("extract")
    fhir = root / "fhir"
    fhir.mkdir()
    with (fhir / "Patient.ndjson").open("w") as fh:
        for i, pid in enumerate(PATIENTS):
            fh.write(json.dumps({
                "resourceType": "Patient", "id": pid,
                "identifier": [{"system": "urn:spe:permit-1:patient", "value": pid}],
                "birthDate": f"19{50 + i}-0{1 + i % 9}-1{i % 10}",
                "meta": {"lastUpdated": "2030-01-01T00:00:00Z"},
            }) + "\n")
    with (fhir / "ImagingStudy.ndjson").open("w") as fh:
        for i, (pid, uid) in enumerate(zip(PATIENTS, STUDY_UIDS, strict=True)):
            fh.write(json.dumps({
                "resourceType": "ImagingStudy", "id": f"study-{KEY.pseudonym(uid)}",
                "identifier": [
                    {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
                    {"type": {"coding": [{"code": "ACSN"}]}, "system": "urn:x:accession",
                     "value": f"A{KEY.pseudonym(uid, 'accession', 10)}"}],
                "subject": {"reference": f"Patient/{pid}"},
                "started": f"2019-03-0{5 + i % 4}T10:00:00+01:00",
                "series": [{"uid": KEY.uid(f"series-{i}"), "instance": [
                    {"uid": KEY.uid(f"inst-{i}"),
                     "sopClass": {"code": "urn:oid:1.2.840.10008.5.1.4.1.1.4"}}]}],
            }) + "\n")
    dicom = root / "dicom" / "p0"
    dicom.mkdir(parents=True)
    write_dicom(dicom / "img0001", patient_id=PATIENTS[0], study_uid=STUDY_UIDS[0],
                study_date="20190305")
    return root


@pytest.fixture(scope="module")
def terms(extract: Path) -> ExtractTerms:
    return terms_from_extract(extract)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def verdict_of(report, path: str):
    return report.file(path)


# the extract's terms ----------------------------------------------------------------------

def test_terms_come_from_fhir_and_dicom(terms: ExtractTerms):
    assert terms.lookup(PATIENTS[3]) == "patient id"
    assert terms.lookup(STUDY_UIDS[2]) == "UID"
    assert terms.lookup(f"urn:oid:{STUDY_UIDS[2]}") == "UID"
    assert terms.lookup("ACC7781234") == "accession number"  # from the DICOM header
    assert terms.lookup("1.2.840.10008.5.1.4.1.1.4") is None  # a SOP class identifies no one
    assert STUDY_DAY in terms.dates
    assert date(2030, 1, 1) not in terms.dates  # meta.lastUpdated is not the patient's


# tables -----------------------------------------------------------------------------------

def test_a_safe_aggregated_table_passes(out: Path, terms: ExtractTerms):
    (out / "counts.csv").write_text(
        "modality,age_band,n\nCT,40-59,25\nCT,60-79,31\nMR,40-59,12\nMR,60-79,10\n")
    report = check_outputs(out, rules=RULES, extract_terms=terms)
    entry = verdict_of(report, "counts.csv")
    assert (entry.kind, entry.verdict, entry.reasons) == ("table", "pass", [])
    assert report.verdict == "pass"


def test_a_cell_under_the_threshold_is_blocked_naming_the_cell(out: Path):
    (out / "counts.csv").write_text("modality,n\nCT,25\nMR,3\nUS,40\n")
    entry = verdict_of(check_outputs(out, rules=RULES), "counts.csv")
    assert entry.verdict == "blocked"
    assert entry.reasons == ["1 count below the threshold of 10: row 3, column 2"]
    assert [(p.rule, p.line, p.column) for p in entry.places] == [("small-count", 3, 2)]


def test_the_threshold_is_the_rules(out: Path):
    (out / "counts.csv").write_text("modality,n\nCT,25\nMR,7\n")
    assert check_outputs(out, rules=OutputRules(min_count=5)).verdict == "pass"


def test_a_zero_cell_goes_to_review(out: Path):
    (out / "counts.csv").write_text("modality,n\nCT,25\nMR,0\n")
    entry = verdict_of(check_outputs(out, rules=RULES), "counts.csv")
    assert entry.verdict == "review"
    assert any("zero" in r and "row 3" in r for r in entry.reasons)
    assert check_outputs(out, rules=OutputRules(zeros="allow")).verdict == "pass"
    assert check_outputs(out, rules=OutputRules(zeros="block")).verdict == "blocked"


def test_a_crosstab_written_by_pandas_is_read_with_its_header_rows(out: Path):
    # DataFrame.to_csv() of pd.crosstab: the column level, then the index name, then data;
    # ACRO's suppressed cells are empty.
    (out / "xtab.csv").write_text(
        "sex,female,male\nmodality,,\nCT,25,30\nMR,12,\nUS,40,8\n")
    entry = verdict_of(check_outputs(out, rules=RULES), "xtab.csv")
    assert entry.verdict == "blocked"
    assert entry.reasons == ["1 count below the threshold of 10: row 5, column 3"]


def test_a_column_of_pseudonyms_from_the_extract_is_blocked(out: Path, terms: ExtractTerms):
    lines = ["patient,n_studies"] + [f"{p},12" for p in PATIENTS[:6]]
    (out / "per_patient.csv").write_text("\n".join(lines) + "\n")
    entry = verdict_of(check_outputs(out, rules=RULES, extract_terms=terms), "per_patient.csv")
    assert entry.verdict == "blocked"
    assert "6 patient ids from the extract: row 2, column 1; row 3, column 1; row 4, column " \
           "1; row 5, column 1; row 6, column 1; and 1 more" in entry.reasons
    assert PATIENTS[0][:4] not in json.dumps(entry.model_dump())  # never echoed, not in part


def test_record_level_rows_and_exact_dates_are_blocked(out: Path):
    rows = ["sex,age_band,value"] + [f"{s},40-59,{i}.5" for i in range(10) for s in "FM"]
    (out / "rows.csv").write_text("\n".join(rows) + "\n")
    (out / "dates.csv").write_text("day,n\n2021-04-01,12\n2021-04-02,15\n2021-04-03,11\n")
    report = check_outputs(out, rules=RULES)
    assert any("rows repeat the categories of an earlier one" in r
               for r in verdict_of(report, "rows.csv").reasons)
    assert verdict_of(report, "rows.csv").verdict == "blocked"
    assert any("exact dates" in r for r in verdict_of(report, "dates.csv").reasons)


def test_a_table_of_magnitudes_goes_to_review(out: Path):
    (out / "means.csv").write_text("modality,n,mean_dose\nCT,25,11.2\nMR,30,0.0\n")
    entry = verdict_of(check_outputs(out, rules=RULES), "means.csv")
    assert entry.verdict == "review"
    assert any("dominance (N=2, k=0.9)" in r for r in entry.reasons)


def test_a_suppressed_cell_beside_a_total_goes_to_review(out: Path):
    (out / "t.csv").write_text("site,CT,MR,total\na,25,<10,40\nb,30,22,52\n")
    entry = verdict_of(check_outputs(out, rules=RULES), "t.csv")
    assert entry.verdict == "review"
    assert any("recovered by subtraction" in r for r in entry.reasons)


def test_markdown_tables_are_checked_too(out: Path):
    (out / "summary.md").write_text("# Result\n\n| modality | n |\n|---|---:|\n| CT | 25 |\n"
                                    "| MR | 4 |\n")
    entry = verdict_of(check_outputs(out, rules=RULES), "summary.md")
    assert entry.verdict == "blocked"
    assert entry.reasons == ["1 count below the threshold of 10: line 6, column 2"]


def test_magnitude_rules():
    assert dominance_violated([95, 3, 1, 1])
    assert not dominance_violated([30, 30, 20, 20])
    assert p_ratio_violated([100, 50, 5])
    assert not p_ratio_violated([100, 50, 30, 20])
    assert p_ratio_violated([10, 10])


# record-level and opaque files -----------------------------------------------------------

def test_a_dicom_file_renamed_csv_is_blocked(out: Path):
    write_dicom(out / "table.csv", patient_id="X", study_uid=generate_uid(),
                study_date="20200101")
    entry = verdict_of(check_outputs(out, rules=RULES), "table.csv")
    assert (entry.kind, entry.verdict) == ("dicom", "blocked")
    assert any("record-level or opaque" in r for r in entry.reasons)


def test_ndjson_is_blocked_whatever_its_name(out: Path):
    line = json.dumps({"resourceType": "Observation", "id": "o1", "status": "final"})
    (out / "results.txt").write_text(line + "\n" + line + "\n")
    (out / "bundle.json").write_text(json.dumps({"resourceType": "Bundle", "entry": []}))
    report = check_outputs(out, rules=RULES)
    assert (verdict_of(report, "results.txt").kind,
            verdict_of(report, "results.txt").verdict) == ("ndjson", "blocked")
    assert verdict_of(report, "bundle.json").verdict == "blocked"


@pytest.mark.parametrize(("name", "content", "what"), [
    ("model.csv", b"PAR1" + b"\x00" * 100, "Parquet"),
    ("arr.txt", b"\x93NUMPY\x01\x00" + b"\x00" * 100, "NumPy"),
    ("data.json", zlib.compress(b"x" * 100)[:0] + b"\x1f\x8b\x08" + b"\x00" * 50, "gzip"),
    ("db.csv", b"SQLite format 3\x00" + b"\x00" * 100, "SQLite"),
    ("p.txt", b"\x80\x04\x95" + b"\x00" * 20, "pickle"),
    ("blob.txt", bytes(range(256)), "binary"),
])
def test_opaque_and_binary_files_are_blocked(out: Path, name, content, what):
    (out / name).write_bytes(content)
    entry = verdict_of(check_outputs(out, rules=RULES), name)
    assert entry.verdict == "blocked"
    assert any(what in r for r in entry.reasons), entry.reasons


def test_types_not_allowed_are_blocked(out: Path):
    (out / "plot.html").write_text("<html><body>chart</body></html>")
    entry = verdict_of(check_outputs(out, rules=RULES), "plot.html")
    assert entry.verdict == "blocked"
    assert any("type .html is not allowed" in r for r in entry.reasons)


# special files ------------------------------------------------------------------------------

def test_a_symlink_is_blocked_and_not_followed(out: Path):
    (out / "passwd.txt").symlink_to("/etc/passwd")
    report = check_outputs(out, rules=RULES)
    entry = verdict_of(report, "passwd.txt")
    assert (entry.kind, entry.verdict) == ("symlink", "blocked")
    assert "root:" not in report.model_dump_json()
    assert entry.size < 100  # the link's own size, not /etc/passwd's


def test_a_symlinked_directory_is_not_entered(out: Path, tmp_path: Path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "rows.csv").write_text("a,n\nx,1\n")
    (out / "sub").symlink_to(secret)
    report = check_outputs(out, rules=RULES)
    assert [f.path for f in report.files] == ["sub"]
    assert report.files[0].verdict == "blocked"


def test_an_output_directory_that_is_a_link_is_refused(tmp_path: Path, out: Path):
    (tmp_path / "link").symlink_to(out)
    report = check_outputs(tmp_path / "link", rules=RULES)
    assert report.verdict == "blocked"
    assert "not a directory" in report.reasons[0]


def test_a_fifo_is_blocked_without_hanging(out: Path):
    os.mkfifo(out / "pipe.csv")
    entry = verdict_of(check_outputs(out, rules=RULES), "pipe.csv")
    assert (entry.kind, entry.verdict) == ("fifo", "blocked")


def test_a_socket_is_blocked(tmp_path: Path):
    short = Path(os.environ.get("TMPDIR", "/tmp")) / f"airlock-{os.getpid()}"
    short.mkdir(exist_ok=True)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(short / "s"))
        entry = verdict_of(check_outputs(short, rules=RULES), "s")
        assert (entry.kind, entry.verdict) == ("socket", "blocked")
    finally:
        sock.close()
        (short / "s").unlink()
        short.rmdir()


def test_a_hard_link_goes_to_review(out: Path, tmp_path: Path):
    (tmp_path / "elsewhere.txt").write_text("hello\n")
    os.link(tmp_path / "elsewhere.txt", out / "notes.txt")
    entry = verdict_of(check_outputs(out, rules=RULES), "notes.txt")
    assert entry.verdict == "review"
    assert any("hard link" in r for r in entry.reasons)


def test_directories_nested_too_deep_are_blocked(out: Path):
    deep = out / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "n.txt").write_text("fine\n")
    report = check_outputs(out, rules=OutputRules(max_depth=2))
    assert verdict_of(report, "a/b/c/").verdict == "blocked"
    assert "a/b/c/n.txt" not in [f.path for f in report.files]
    assert check_outputs(out, rules=RULES).verdict == "pass"


# text, figures, sizes -------------------------------------------------------------------------

def test_an_exact_study_date_in_a_text_is_blocked(out: Path, terms: ExtractTerms):
    (out / "notes.txt").write_text("Cohort summary.\nThe first scan was on 05/03/2019.\n")
    entry = verdict_of(check_outputs(out, rules=RULES, extract_terms=terms), "notes.txt")
    assert entry.verdict == "blocked"
    assert entry.reasons == ["1 exact date from the extract: line 2"]


def test_ids_in_text_and_file_names_are_blocked(out: Path, terms: ExtractTerms):
    (out / "log.txt").write_text(f"processed {STUDY_UIDS[1]} for Patient/{PATIENTS[2]}\n")
    (out / f"{PATIENTS[5]}.txt").write_text("ok\n")
    report = check_outputs(out, rules=RULES, extract_terms=terms)
    reasons = verdict_of(report, "log.txt").reasons
    assert any("UID from the extract" in r for r in reasons)
    assert any("patient id from the extract" in r for r in reasons)
    assert verdict_of(report, f"{PATIENTS[5]}.txt").verdict == "blocked"


def test_a_clean_text_passes(out: Path, terms: ExtractTerms):
    (out / "README.md").write_text("Model trained on 2024-01-15; AUC 0.81.\n")
    assert check_outputs(out, rules=RULES, extract_terms=terms).verdict == "pass"


def png_bytes(text: str = "") -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    extra = chunk(b"tEXt", b"Comment\x00" + text.encode()) if text else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def test_a_png_goes_to_review_and_its_text_chunks_are_scanned(out: Path, terms: ExtractTerms):
    (out / "fig.png").write_bytes(png_bytes())
    (out / "tagged.png").write_bytes(png_bytes(f"patient {PATIENTS[1]}"))
    report = check_outputs(out, rules=RULES, extract_terms=terms)
    assert (verdict_of(report, "fig.png").kind, verdict_of(report, "fig.png").verdict) == (
        "image", "review")
    assert verdict_of(report, "tagged.png").verdict == "blocked"


def test_a_png_that_is_not_a_png_is_blocked(out: Path):
    (out / "fig.png").write_text("modality,n\nCT,25\n")
    assert verdict_of(check_outputs(out, rules=RULES), "fig.png").verdict == "blocked"


def test_an_svg_with_a_script_is_blocked(out: Path):
    (out / "a.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>')
    (out / "b.svg").write_text('<svg><script>fetch("x")</script></svg>')
    report = check_outputs(out, rules=RULES)
    assert verdict_of(report, "a.svg").verdict == "review"
    assert verdict_of(report, "b.svg").verdict == "blocked"


def test_oversize_files_and_totals_are_blocked(out: Path):
    (out / "big.txt").write_text("x" * 2000)
    report = check_outputs(out, rules=OutputRules(max_file_bytes=1000))
    assert verdict_of(report, "big.txt").verdict == "blocked"
    assert any("over the limit" in r for r in verdict_of(report, "big.txt").reasons)
    (out / "big.txt").write_text("x" * 600)
    (out / "big2.txt").write_text("x" * 600)
    report = check_outputs(out, rules=OutputRules(max_file_bytes=1000, max_total_bytes=1000))
    assert report.verdict == "blocked"
    assert all(f.verdict == "pass" for f in report.files)
    assert "1200 bytes" in report.reasons[0]


def test_too_many_files_are_blocked(out: Path):
    for i in range(4):
        (out / f"{i}.txt").write_text("ok\n")
    report = check_outputs(out, rules=OutputRules(max_files=3))
    assert report.verdict == "blocked"
    assert "more than 3 entries" in report.reasons[0]


# ACRO -------------------------------------------------------------------------------------

def acro_results(out: Path, outputs: dict[str, tuple[str, str]]) -> None:
    """ACRO's finalise(): results.json, the files, checksums/<name>.txt."""
    results = {}
    for i, (name, (status, summary)) in enumerate(outputs.items()):
        results[f"output_{i}"] = {
            "uid": f"output_{i}", "status": status, "type": "table",
            "properties": {"method": "crosstab"},
            "files": [{"name": name, "sdc": {"summary": {"suppressed": False, "threshold": 3,
                                                         "p-ratio": 0, "nk-rule": 0}}}],
            "outcome": {}, "command": "acro.crosstab(df.year, df.modality)",
            "summary": summary, "timestamp": "2030-01-01T00:00:00", "comments": [],
            "exception": ""}
    (out / "results.json").write_text(json.dumps({
        "version": "0.4.12", "results": results,
        "session_summary": {"DO_NOT_RELEASE": True, "data": []}}, indent=4))
    (out / "checksums").mkdir(exist_ok=True)
    for name in [*outputs, "results.json"]:
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        (out / "checksums" / f"{name}.txt").write_text(digest)


def test_an_acro_output_marked_fail_is_blocked_without_quoting_acro(out: Path):
    (out / "output_0_0.csv").write_text("modality,CT,MR\n2019,25,40\n2020,31,\n")
    (out / "output_1_0.csv").write_text("modality,CT\n2019,25\n2020,31\n")
    acro_results(out, {
        "output_0_0.csv": ("fail", "fail; threshold: 3 cells may need suppressing; "),
        "output_1_0.csv": ("pass", "pass"),
    })
    report = check_outputs(out, rules=RULES)
    failed = verdict_of(report, "output_0_0.csv")
    assert failed.verdict == "blocked"
    assert failed.reasons == ["ACRO's results.json (written inside the job) marks it fail"]
    passed = verdict_of(report, "output_1_0.csv")
    assert passed.verdict == "pass"
    assert any("not evidence" in n for n in passed.notes)
    assert verdict_of(report, "results.json").kind == "acro-metadata"
    assert verdict_of(report, "results.json").verdict == "review"


def test_a_forged_acro_pass_spares_nothing(out: Path):
    """A job writes ACRO's results.json itself, "pass" with checksums it computed, over
    one-person means: the magnitudes still go to review, the small count is blocked."""
    (out / "output_0_0.csv").write_text("modality,mean_dose\nCT,11.2\nMR,13.5\n")
    (out / "output_1_0.csv").write_text("modality,n,mean_dose\nCT,1,11.2\nMR,1,13.5\n")
    acro_results(out, {"output_0_0.csv": ("pass", "pass"), "output_1_0.csv": ("pass", "pass")})
    report = check_outputs(out, rules=RULES)
    means = verdict_of(report, "output_0_0.csv")
    assert means.verdict == "review"
    assert any("dominance" in r for r in means.reasons)
    assert verdict_of(report, "output_1_0.csv").verdict == "blocked"


def test_acro_review_is_kept(out: Path):
    (out / "output_0_0.csv").write_text("modality,n\nCT,25\nMR,30\n")
    acro_results(out, {"output_0_0.csv": ("review", "review; negative values found")})
    entry = verdict_of(check_outputs(out, rules=RULES), "output_0_0.csv")
    assert entry.verdict == "review"
    assert entry.reasons == ["ACRO's results.json (written inside the job) marks it review"]


def test_acros_pass_does_not_override_the_airlocks_threshold(out: Path):
    (out / "output_0_0.csv").write_text("modality,n\nCT,25\nMR,4\n")
    acro_results(out, {"output_0_0.csv": ("pass", "pass")})
    assert verdict_of(check_outputs(out, rules=RULES), "output_0_0.csv").verdict == "blocked"


# the report and the policy ----------------------------------------------------------------

def test_the_report_json_lists_reasons_per_file(out: Path, terms: ExtractTerms):
    (out / "counts.csv").write_text("modality,n\nCT,25\nMR,3\n")
    (out / "fig.png").write_bytes(png_bytes())
    (out / "ok.csv").write_text("modality,n\nCT,25\nMR,30\n")
    data = json.loads(check_outputs(out, rules=RULES, extract_terms=terms).model_dump_json())
    assert data["verdict"] == "blocked"
    files = {f["path"]: f for f in data["files"]}
    assert set(files) == {"counts.csv", "fig.png", "ok.csv"}
    assert files["counts.csv"]["verdict"] == "blocked"
    assert files["counts.csv"]["reasons"][0] == ("1 count below the threshold of 10: row 3, "
                                                 "column 2")
    assert files["counts.csv"]["places"] == [{"rule": "small-count", "line": 3, "column": 2}]
    assert files["fig.png"]["verdict"] == "review"
    assert files["fig.png"]["reasons"]
    assert files["ok.csv"] == {"path": "ok.csv", "size": 23, "kind": "table", "verdict": "pass",
                               "reasons": [], "notes": files["ok.csv"]["notes"], "places": []}
    assert data["rules"]["min_count"] == 10


def test_rules_come_from_the_disclosure_policy():
    policy = PolicyService(EmbeddedEngine(REPO_ROOT / "policies"))
    assert rules_from_policy(policy) == RULES
    with pytest.raises(Exception, match="no airlock rule"):
        rules_from_policy(policy, "query_count")



# how an attacker writes -------------------------------------------------------------------

def test_a_models_coefficients_need_its_degrees_of_freedom(out: Path):
    coefs = "term,coef,std_err,p\nconst,-4.1,0.81,0.001\nage,0.04,0.009,0.002\n"
    (out / "no_dof.csv").write_text(coefs)
    (out / "small_dof.csv").write_text(coefs + "df_resid,6,,\n")
    (out / "ok.csv").write_text(coefs + "df_resid,313,,\n")
    report = check_outputs(out, rules=RULES)
    assert verdict_of(report, "no_dof.csv").verdict == "review"
    assert verdict_of(report, "small_dof.csv").verdict == "blocked"
    assert verdict_of(report, "ok.csv").verdict == "pass"


def test_a_model_summary_over_too_few_observations_is_blocked(out: Path):
    rows = "\n".join(f"x{i}   {0.1 * i:.4f}   0.0100   {i}.000   0.001" for i in range(12))
    (out / "model.txt").write_text(f"No. Observations:   8\nDf Residuals:   4\n{rows}\n")
    entry = verdict_of(check_outputs(out, rules=RULES), "model.txt")
    assert entry.verdict == "blocked"
    assert any("model summary" in r for r in entry.reasons)


def test_a_table_written_as_text_lines_is_checked_as_a_table(out: Path):
    lines = [f"site{chr(97 + i)}   {25 + i}" for i in range(10)] + ["sitek   4"]
    (out / "counts.txt").write_text("\n".join(lines) + "\n")
    entry = verdict_of(check_outputs(out, rules=RULES), "counts.txt")
    assert entry.verdict == "blocked"
    assert entry.reasons == ["1 count below the threshold of 10: line 11, column 2"]


def test_an_iso_week_date_of_the_extract_is_an_exact_date(out: Path, terms: ExtractTerms):
    year, week, day = STUDY_DAY.isocalendar()
    (out / "note.txt").write_text(f"scan in {year}-W{week:02d}-{day}\n")
    entry = verdict_of(check_outputs(out, rules=RULES, extract_terms=terms), "note.txt")
    assert entry.reasons == ["1 exact date from the extract: line 1"]


def test_fhir_resources_without_resource_type_are_blocked(out: Path):
    records = [{"status": "final", "subject": {"reference": "x"}, "effectiveDateTime": "2019-W10",
                "valueQuantity": {"value": 61.9 + i, "unit": "kg"}} for i in range(3)]
    (out / "data.json").write_text(json.dumps(records))
    entry = verdict_of(check_outputs(out, rules=RULES), "data.json")
    assert entry.verdict == "blocked"
    assert any("shaped like FHIR resources" in r for r in entry.reasons)


def test_the_log_withholds_lines_with_disguised_ids(terms: ExtractTerms):
    from spe.airlock.scan import withhold_lines

    kept, withheld = withhold_lines(f"ok\nid {PATIENTS[0][::-1]}\nhex {PATIENTS[1].encode().hex()}"
                                    "\ndone\n", terms)
    assert withheld == 2
    assert kept.startswith("ok\n")
    assert PATIENTS[0][::-1] not in kept


def test_a_short_table_of_distinct_words_passes_and_records_of_text_do_not(out: Path):
    (out / "README.md").write_text("# Files\n\n| file | what |\n|---|---|\n| sex.csv | by sex |\n"
                                   "| model.txt | the model |\n")
    (out / "rows.csv").write_text("sex,region\nfemale,ES-28\nmale,ES-28\nfemale,ES-08\n")
    report = check_outputs(out, rules=RULES)
    assert verdict_of(report, "README.md").verdict == "pass"
    assert verdict_of(report, "rows.csv").verdict == "review"


def test_a_list_of_values_one_per_line_goes_to_review(out: Path):
    (out / "weights.txt").write_text("".join(f"{60 + i * 1.7:.1f}\n" for i in range(30)))
    entry = verdict_of(check_outputs(out, rules=RULES), "weights.txt")
    assert entry.verdict == "review"
    assert any("magnitudes" in r for r in entry.reasons)
