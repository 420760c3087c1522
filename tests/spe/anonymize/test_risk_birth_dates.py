"""`spe risk` reads the age a birth date of any precision carries (issue 17): a FHIR
birthDate cut to the year ("1961", what `spe deid fhir`'s default rules leave) or the month,
a DICOM PatientBirthDate cut alike; the command and the node's staging read an extract the
same way, and `--reduce` reports the k its files have."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spe.anonymize.extract import (
    AGE_BAND_URL,
    ExtractError,
    dicom_date,
    fhir_date,
    load_dicom_extract,
    load_records,
)
from spe.anonymize.risk import HIERARCHIES, measure
from spe.cli.main import app
from tests.spe.anonymize.test_risk_apply import _image

SECRET = "birth-dates-test-secret-0123456789abcdef"
PERMIT = "P-BIRTH"
runner = CliRunner()


def _ndjson(path: Path, resources: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in resources), encoding="utf-8")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def risk_json(*args: object) -> dict:
    result = runner.invoke(app, ["risk", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


# --- a table counted by hand ----------------------------------------------------------------

#: (birthDate, gender, how many); every patient has one study on 2020-06-01, no address and
#: no codes, so the classes are (age at 2020-06-01, sex):
#:   59 female x5 ("1961"), 59 male x3 ("1961"), 50 female x2 ("1970"),
#:   40 male x1 ("1980-04": April 1980, 40 by June 2020), 29 female x1 ("1990-07-15").
HAND_MADE = [("1961", "female", 5), ("1961", "male", 3), ("1970", "female", 2),
             ("1980-04", "male", 1), ("1990-07-15", "female", 1)]


@pytest.fixture
def hand_made(tmp_path: Path) -> Path:
    folder = tmp_path / "fhir"
    folder.mkdir()
    births = [(born, sex) for born, sex, n in HAND_MADE for _ in range(n)]
    assert len(births) == 12
    _ndjson(folder / "Patient.ndjson", [
        {"resourceType": "Patient", "id": f"p{i}", "birthDate": born, "gender": sex}
        for i, (born, sex) in enumerate(births)])
    _ndjson(folder / "ImagingStudy.ndjson", [
        {"resourceType": "ImagingStudy", "id": f"s{i}", "status": "available",
         "subject": {"reference": f"Patient/p{i}"}, "started": "2020-06-01T09:30:00+01:00"}
        for i in range(len(births))])
    return folder


def test_cli_counts_the_classes_year_only_birth_dates_make(hand_made: Path):
    """Ignoring the year-only and year-month dates (the old reading) gives 3 classes
    (unknown age by sex, and the one full date) and 5 records at risk; counted by hand there
    are 5 classes and 7 records in classes under 5."""
    report = risk_json(hand_made, "--k", "5")
    assert report["records"] == 12
    assert report["classes"] == 5
    assert report["k"] == 1
    assert report["at_risk"] == 3 + 2 + 1 + 1
    assert report["distinct"]["age"] == 4  # 59, 50, 40, 29
    assert sorted(r["age"] for r in load_records(hand_made)) == [29, 40] + [50] * 2 + [59] * 8


def test_partial_dates_are_read_as_their_first_day():
    assert fhir_date("1961") == date(1961, 1, 1)
    assert fhir_date("1961-04") == date(1961, 4, 1)
    assert fhir_date("1961-04-12") == date(1961, 4, 12)
    assert fhir_date("2020-06-01T09:30:00+01:00") == date(2020, 6, 1)
    assert fhir_date(None) is None
    assert dicom_date("1961") == date(1961, 1, 1)
    assert dicom_date("196104") == date(1961, 4, 1)
    assert dicom_date("19610412") == dicom_date("1961.04.12") == date(1961, 4, 12)
    assert dicom_date("") is None
    for bad in ("61", "1961-4", "1961-13", "1961-04-31", "12/04/1961", "abcd", 1961):
        with pytest.raises(ValueError, match="not a FHIR date"):
            fhir_date(bad)
    for bad in ("61", "19611", "1961131", "19611301", "1961-04-12"):
        with pytest.raises(ValueError, match="not a DICOM date"):
            dicom_date(bad)


def test_a_dicom_birth_date_cut_to_the_year_is_aged(tmp_path: Path):
    import pydicom

    dicom = tmp_path / "dicom"
    dicom.mkdir()
    with pydicom.config.disable_value_validation():  # not a valid DA: a writer's shortcut
        _image(dicom, "Y", age="", born="1961", study="20200601")
        _image(dicom, "M", age="", born="196104", study="20200301")
    records = {r["id"]: r["age"] for r in load_dicom_extract(dicom)}
    assert records == {"Y": 59, "M": 58}
    # A DICOM-only extract is measured by the command as by staging.
    report = risk_json(tmp_path)
    assert (report["records"], report["classes"]) == (2, 2)


# --- bad dates are refused, in one line -----------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("birthDate", "1961-13"), ("birthDate", "12/04/1961"), ("birthDate", 1961)])
def test_cli_refuses_a_birth_date_it_cannot_read(hand_made: Path, field: str, value):
    patients = _read(hand_made / "Patient.ndjson")
    patients[3][field] = value
    _ndjson(hand_made / "Patient.ndjson", patients)
    line = one_line_error(runner.invoke(app, ["risk", str(hand_made)]))
    assert "Patient.ndjson line 4: birthDate is not a FHIR date" in line
    assert str(value) not in line  # a birth date is not echoed


def test_cli_refuses_a_study_date_it_cannot_read(hand_made: Path):
    studies = _read(hand_made / "ImagingStudy.ndjson")
    studies[0]["started"] = "June 2020"
    _ndjson(hand_made / "ImagingStudy.ndjson", studies)
    line = one_line_error(runner.invoke(app, ["risk", str(hand_made)]))
    assert "ImagingStudy.ndjson line 1: started is not a FHIR date" in line


@pytest.mark.parametrize(("born", "age", "attribute"), [
    ("1961x", "", "PatientBirthDate"), ("19611301", "", "PatientBirthDate"),
    ("19610101", "59", "PatientAge")])
def test_cli_refuses_dicom_ages_it_cannot_read(tmp_path: Path, born: str, age: str,
                                               attribute: str):
    import pydicom

    dicom = tmp_path / "dicom"
    dicom.mkdir()
    with pydicom.config.disable_value_validation():
        _image(dicom, "A", born=born, age=age)
    line = one_line_error(runner.invoke(app, ["risk", str(tmp_path)]))
    assert f"{attribute} is not a DICOM" in line
    with pytest.raises(ExtractError, match=attribute):
        load_dicom_extract(dicom)


# --- `spe deid fhir`'s output, the CLI and staging ------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spe.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, institutions=1, patients=120, seed=2)
    return out / "site-a"


@pytest.fixture(scope="module")
def deidentified(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`spe deid fhir` with its default rules, keyed as a node keys a pseudonymised permit."""
    root = tmp_path_factory.mktemp("deid")
    key = root / "node.secret"
    key.write_bytes(SECRET.encode())
    out = root / "fhir"
    result = runner.invoke(app, ["deid", "fhir", str(site / "fhir"), str(out),
                                 "--key-file", str(key), "--permit", PERMIT, "--workers", "1"])
    assert result.exit_code == 0, result.output
    births = [p.get("birthDate") for p in _read(out / "Patient.ndjson")]
    assert len(births) == 120
    assert all(isinstance(b, str) and len(b) == 4 for b in births)  # the year, as issue 17
    return out


def test_the_birth_year_deid_fhir_leaves_is_counted(deidentified: Path):
    records = load_records(deidentified)
    ignoring = measure([{**r, "age": None} for r in records])
    report = risk_json(deidentified)
    assert report["distinct"]["age"] > 10
    assert report["classes"] > ignoring.classes
    assert report["at_risk"] >= ignoring.at_risk


def test_cli_and_staging_measure_the_same_extract_alike(site: Path, deidentified: Path,
                                                        tmp_path: Path):
    """The node stages the same FHIR with the same permit key: its report's figures before
    the reduction are `spe risk`'s on `spe deid fhir`'s output, and its figures after are
    `spe risk`'s on the staged files."""
    from datetime import date as day

    from gateway.node.config import NodeConfig
    from gateway.node.jobs.staging import stage
    from spe.policy.service import make_policy_service
    from spe.settings import Settings

    settings = Settings(data_dir=tmp_path / "var", secret_key=SECRET)
    node = NodeConfig("site-a", "Site A", "sqlite://", fhir=f"ndjson:{site / 'fhir'}")
    permit = type("Permit", (), {"pid": PERMIT, "status": "issued", "form": "pseudonymised",
                                 "start": day(2020, 1, 1), "end": day(2099, 12, 31)})()
    staged = stage(permit, node=node, settings=settings,
                   policy=make_policy_service(settings), cache_dir=tmp_path / "cache",
                   data_version="v1")
    risk = staged.report["risk"]
    assert risk["measured"]
    assert risk["before"] is not None  # 120 patients: it had to reduce

    figures = ("records", "k", "classes", "at_risk")
    cli_before = risk_json(deidentified, "--k", str(risk["k_wanted"]))
    assert {f: cli_before[f] for f in figures} == {f: risk["before"][f] for f in figures}
    cli_after = risk_json(staged.path, "--k", str(risk["k_wanted"]))
    assert {f: cli_after[f] for f in figures} == {f: risk[f] for f in figures}


def test_reduce_reports_the_k_its_files_have(deidentified: Path, tmp_path: Path):
    out = tmp_path / "reduced"
    claimed = risk_json(deidentified, "--reduce", "--k", "5", "--out", out)
    assert claimed["written"] == str(out)
    assert claimed["before"]["classes"] == risk_json(deidentified)["classes"]
    again = risk_json(out)
    assert claimed["k"] >= 5
    assert (again["k"], again["classes"], again["records"]) == (
        claimed["k"], claimed["classes"], claimed["records"])
    assert claimed["records"] == 120 - claimed["suppressed"]
    patients = _read(out / "fhir" / "Patient.ndjson")
    assert patients
    if claimed["levels"]["age"] >= 1:  # the birth year went with the age's detail
        assert not any("birthDate" in p for p in patients)
    # Without --out the same figures, measured on a copy that is thrown away.
    dry = risk_json(deidentified, "--reduce", "--k", "5")
    assert dry["written"] is None
    assert (dry["k"], dry["classes"]) == (claimed["k"], claimed["classes"])
    assert _read(deidentified / "Patient.ndjson")[0].get("birthDate")


def test_out_is_refused_where_it_would_do_harm(deidentified: Path, tmp_path: Path):
    assert "--out needs --reduce" in one_line_error(
        runner.invoke(app, ["risk", str(deidentified), "--out", str(tmp_path / "x")]))
    assert "exists" in one_line_error(
        runner.invoke(app, ["risk", str(deidentified), "--reduce", "--out", str(tmp_path)]))
    inside = deidentified / "reduced"
    assert "inside the extract" in one_line_error(
        runner.invoke(app, ["risk", str(deidentified), "--reduce", "--out", str(inside)]))
    assert not inside.exists()


def test_reduce_runs_again_on_its_own_output(hand_made: Path, tmp_path: Path):
    """A reduced extract holds age bands instead of birth dates, and can be reduced again."""
    first = tmp_path / "first"
    once = risk_json(hand_made, "--reduce", "--k", "3", "--max-suppression", "0.2",
                     "--out", first)
    assert once["levels"]["age"] == 2
    assert (once["k"], once["records"]) == (3, 10)  # the lone 40- and 29-year-olds went
    patients = _read(first / "fhir" / "Patient.ndjson")
    assert not any("birthDate" in p for p in patients)
    assert {e["valueString"] for p in patients for e in p["extension"]} == {"50-59"}
    twice = risk_json(first, "--reduce", "--k", "5", "--out", tmp_path / "second")
    assert twice["before"]["classes"] == 2  # 50-59 female x7, male x3
    assert twice["k"] == risk_json(tmp_path / "second")["k"] == 10


def test_age_bands_are_generalised_further(tmp_path: Path):
    """Bands as risk_apply writes them climb the age hierarchy: a band of this width holds
    them, or they stay when they are wider already."""
    folder = tmp_path / "fhir"
    folder.mkdir()
    bands = [("55-59", "female"), ("55-59", "female"), ("50-54", "female"),
             ("50-54", "female"), ("40-44", "male"), ("45-49", "male")]
    _ndjson(folder / "Patient.ndjson", [
        {"resourceType": "Patient", "id": f"p{i}", "gender": sex,
         "extension": [{"url": AGE_BAND_URL, "valueString": band}]}
        for i, (band, sex) in enumerate(bands)])
    report = risk_json(folder, "--reduce", "--k", "2", "--max-suppression", "0",
                       "--out", tmp_path / "out")
    assert report["levels"]["age"] == 2
    assert (report["k"], report["classes"], report["suppressed"]) == (2, 2, 0)
    written = {e["valueString"] for p in _read(tmp_path / "out" / "fhir" / "Patient.ndjson")
               for e in p["extension"]}
    assert written == {"50-59", "40-49"}
    assert HIERARCHIES["age"].generalise("55-59", 2) == "50-59"
    assert HIERARCHIES["age"].generalise("40-59", 1) == "40-59"


def test_cli_refuses_an_age_band_it_cannot_read(hand_made: Path):
    patients = _read(hand_made / "Patient.ndjson")
    del patients[0]["birthDate"]
    patients[0]["extension"] = [{"url": AGE_BAND_URL, "valueString": "fifties"}]
    _ndjson(hand_made / "Patient.ndjson", patients)
    line = one_line_error(runner.invoke(app, ["risk", str(hand_made)]))
    assert "Patient.ndjson line 1: the age band extension is not a band of years" in line
