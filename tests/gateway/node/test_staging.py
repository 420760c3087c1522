"""Staging a permit's extract at a node (gateway/node/jobs/staging.py)."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pydicom
import pytest

from gateway.node.config import NodeConfig
from gateway.node.jobs.staging import StagedExtract, StagingError, stage
from spe.anonymize.pseudonyms import PermitKey
from spe.policy import EmbeddedEngine
from spe.policy.service import Decision, PolicyService, make_policy_service
from spe.settings import REPO_ROOT, Settings
from spe.synth import generate

SECRET = "staging-test-secret-0123456789abcdef"


@dataclass
class Permit:
    pid: str
    form: str
    status: str = "issued"
    start: date = date(2020, 1, 1)
    end: date = date(2099, 12, 31)


@dataclass(frozen=True)
class Site:
    root: Path
    node: NodeConfig
    settings: Settings
    policy: PolicyService
    mrns: set[str]
    names: set[str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    out = tmp_path_factory.mktemp("synth")
    generate(out, institutions=1, patients=12, seed=7)
    root = out / "site-a"
    (root / "dicom" / "junk.dcm").write_bytes(b"not dicom at all")  # one failed file
    mrns, names = set(), set()
    for path in sorted((root / "dicom").rglob("*.dcm"))[:40]:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        mrns.add(str(ds.PatientID))
        names.add(str(ds.PatientName))
    settings = Settings(data_dir=out / "var", secret_key=SECRET)
    node = NodeConfig("site-a", "Site A", "sqlite://", dicom=f"folder:{root / 'dicom'}",
                      fhir=f"ndjson:{root / 'fhir'}")
    return Site(root, node, settings, make_policy_service(settings), mrns, names)


def run(site: Site, permit: Permit, cache: Path, version: str = "v1", **kw) -> StagedExtract:
    return stage(permit, node=kw.pop("node", site.node), settings=site.settings,
                 policy=kw.pop("policy", site.policy), cache_dir=cache, data_version=version,
                 **kw)


def headers(extract: Path) -> list[pydicom.Dataset]:
    files = sorted((extract / "dicom").rglob("*.dcm"))
    assert files
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def patients(extract: Path) -> list[dict]:
    lines = (extract / "fhir" / "Patient.ndjson").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def mr_values(patient: dict) -> list[str]:
    return [i["value"] for i in patient.get("identifier", [])
            if any(c.get("code") == "MR" for c in i.get("type", {}).get("coding", []))]


@pytest.fixture(scope="module")
def staged(site: Site, tmp_path_factory: pytest.TempPathFactory) -> dict[str, StagedExtract]:
    cache = tmp_path_factory.mktemp("cache")
    return {"cache": cache,  # type: ignore[dict-item]
            "pseudo": run(site, Permit("P-PSEUDO", "pseudonymised"), cache),
            "anon": run(site, Permit("P-ANON", "anonymised"), cache)}


def test_pseudonymised_extract_has_no_source_identifiers(site: Site, staged):
    extract = staged["pseudo"]
    assert not extract.cached
    assert extract.path == staged["cache"] / "P-PSEUDO" / "v1"
    assert {p.name for p in extract.path.iterdir()} >= {"dicom", "fhir", "report.json"}
    key = PermitKey.derive(SECRET, "P-PSEUDO")
    datasets = headers(extract.path)
    ids = {str(ds.PatientID) for ds in datasets}
    assert site.mrns
    assert not ids & site.mrns
    assert ids <= {key.pseudonym(m, "patient", 16) for m in _all_mrns(site)}
    texts = {str(ds.get("PatientName", "")) for ds in datasets}
    assert not texts & site.names
    text = (extract.path / "fhir" / "Patient.ndjson").read_text(encoding="utf-8")
    for mrn in site.mrns:
        assert mrn not in text
    # FHIR patients carry the same pseudonym as their images.
    fhir_ids = {v for p in patients(extract.path) for v in mr_values(p)}
    assert ids <= fhir_ids
    assert not fhir_ids & _all_mrns(site)


def test_anonymised_extract_uses_a_one_off_key(site: Site, staged):
    pseudo, anon = staged["pseudo"], staged["anon"]
    assert pseudo.report["pseudonymised"] is True
    assert anon.report["pseudonymised"] is False
    ids = {str(ds.PatientID) for ds in headers(anon.path)}
    assert not ids & site.mrns
    # Neither the permit key nor the other permit's pseudonyms reproduce them...
    permit_key = PermitKey.derive(SECRET, "P-ANON")
    assert not ids & {permit_key.pseudonym(m, "patient", 16) for m in _all_mrns(site)}
    assert not ids & {str(ds.PatientID) for ds in headers(pseudo.path)}
    # ...but images and records still line up inside the extract.
    assert ids <= {v for p in patients(anon.path) for v in mr_values(p)}


def test_report_has_counts_risk_and_no_paths(site: Site, staged):
    report = staged["pseudo"].report
    on_disk = json.loads((staged["pseudo"].path / "report.json").read_text())
    assert on_disk == report
    assert report["pid"] == "P-PSEUDO"
    assert report["data_version"] == "v1"
    assert report["layers"][:2] == ["profile", "pseudonyms"]
    assert "risk" in report["layers"]
    dicom = report["counts"]["dicom"]
    assert dicom["files_in"] == dicom["files_out"] + dicom["excluded"] + dicom["failed"]
    assert dicom["failed"] >= 1
    assert dicom["files_out"] > 0
    assert len(report["excluded_files"]) == dicom["excluded"] + dicom["failed"]
    failed = [f for f in report["excluded_files"] if f["outcome"] == "failed"]
    assert any("DICOM" in f["reason"] for f in failed)
    fhir = report["counts"]["fhir"]
    assert fhir["resources_in"] > 0
    assert fhir["resources_out"] > 0
    risk = report["risk"]
    assert risk["measured"]
    assert risk["records"] == 12
    for name in ("k", "max_risk", "average_risk", "at_risk"):
        assert name in risk
    assert risk["k_min"] == 5
    assert risk["max_risk_allowed"] == 0.2
    assert report["risk_ok"] is (risk["k"] >= 5)
    assert report["seconds"] > 0
    text = json.dumps(report)
    assert "junk.dcm" not in text
    assert str(site.root) not in text
    for mrn in _all_mrns(site):
        assert mrn not in text
    # The operator's list with the real paths lies outside the extract.
    operator = json.loads((staged["pseudo"].path.parent / "v1.operator.json").read_text())
    assert any(f["file"] == "junk.dcm" for f in operator["files"])


def test_second_call_is_cached_and_a_new_version_restages(site: Site, staged):
    cache = staged["cache"]
    permit = Permit("P-PSEUDO", "pseudonymised")
    again = run(site, permit, cache)
    assert again.cached
    assert again.report == staged["pseudo"].report
    fresh = run(site, permit, cache, version="v2")
    assert not fresh.cached
    assert fresh.path == cache / "P-PSEUDO" / "v2"
    assert fresh.report["data_version"] == "v2"
    assert (cache / "P-PSEUDO" / "v1" / "report.json").is_file()
    # The permit key is stable: the same pseudonyms in both versions.
    assert ({str(ds.PatientID) for ds in headers(fresh.path)}
            == {str(ds.PatientID) for ds in headers(again.path)})
    assert not [p for p in (cache / "P-PSEUDO").iterdir() if p.name.endswith(".partial")]


def test_other_sources_restage_the_same_version(site: Site, tmp_path: Path):
    """The operator points the node at other stores without a sync: the cached extract of
    the old ones is not what the job gets."""
    permit = Permit("P-SRC", "pseudonymised")
    first = run(site, permit, tmp_path)
    assert first.report["counts"]["fhir"]["source"] is True
    dicom_only = NodeConfig("site-a", "Site A", "sqlite://", dicom=site.node.dicom)
    second = run(site, permit, tmp_path, node=dicom_only)
    assert not second.cached
    assert second.report["counts"]["fhir"]["source"] is False
    assert not list((second.path / "fhir").iterdir())
    assert run(site, permit, tmp_path, node=dicom_only).cached


def test_concurrent_calls_build_once(site: Site, tmp_path: Path):
    results: list[StagedExtract] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            results.append(run(site, Permit("P-RACE", "anonymised"), tmp_path))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(r.cached for r in results) == [False, True]
    assert results[0].report == results[1].report


class Denying(PolicyService):
    def __init__(self) -> None:
        pass

    def decide(self, policy: str, input: dict) -> Decision:
        return Decision(False, "denied: staging switched off", policy)


def test_refusals(site: Site, tmp_path: Path):
    with pytest.raises(StagingError, match="staging switched off") as denied:
        run(site, Permit("P-1", "anonymised"), tmp_path, policy=Denying())
    assert denied.value.status_code == 409
    with pytest.raises(StagingError, match="not active"):
        run(site, Permit("P-2", "pseudonymised", status="revoked"), tmp_path)
    with pytest.raises(StagingError, match="expired"):
        run(site, Permit("P-3", "pseudonymised", end=date(2021, 1, 1)), tmp_path)
    unknown = NodeConfig("n", "n", "sqlite://", dicom="pacs://PACS@127.0.0.1:104")
    with pytest.raises(StagingError, match="use folder:, dimse:// or dicomweb:"):
        run(site, Permit("P-4", "anonymised"), tmp_path, node=unknown)
    bad = NodeConfig("n", "n", "sqlite://", dicom="dimse://PACS@127.0.0.1:104?retrieve=x")
    with pytest.raises(StagingError, match="retrieve= must be one of"):
        run(site, Permit("P-4", "anonymised"), tmp_path, node=bad)
    missing = NodeConfig("n", "n", "sqlite://", dicom=f"folder:{tmp_path / 'nope'}")
    with pytest.raises(StagingError, match="not a folder"):
        run(site, Permit("P-5", "anonymised"), tmp_path, node=missing)
    with pytest.raises(StagingError, match="cache folder"):
        run(site, Permit("P-6", "anonymised"), tmp_path, version="../x")
    assert not any(tmp_path.rglob("report.json"))


def _all_mrns(site: Site) -> set[str]:
    text = (site.root / "fhir" / "Patient.ndjson").read_text(encoding="utf-8")
    return {v for line in text.splitlines() if line.strip()
            for v in mr_values(json.loads(line))}


def _node_with_permit(tmp_path: Path, pid: str):
    from datetime import UTC, datetime

    from gateway.node.permits.models import NodePermit
    from spe.db import make_engine, make_sessionmaker, session_scope
    from spe.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'node.db'}"
    upgrade(url, "node")
    sessions = make_sessionmaker(make_engine(url))
    with session_scope(sessions) as session:
        session.add(NodePermit(pid=pid, seq=1, status="issued", members=["carol@demo"],
                               datasets=["site-a/x"], form="pseudonymised",
                               start=date(2020, 1, 1), end=date(2099, 12, 31), document="",
                               received_at=datetime.now(UTC)))
    return sessions


def test_layer_3_is_written_into_the_files(site: Site, staged):
    """12 patients are k = 1 as staged; the extract the job sees reaches k >= 5, measured
    again here from its files, and says no more than the reduction allowed."""
    from gateway.node.jobs.staging import staged_records
    from spe.anonymize.extract import AGE_BAND_URL
    from spe.anonymize.risk import measure

    extract = staged["pseudo"]
    risk = extract.report["risk"]
    assert risk["before"]["k"] < 5
    assert risk["reduction"]["applied"] is True
    assert risk["ok"]
    assert extract.report["risk_ok"]
    remeasured = measure(staged_records(extract.path / "fhir", extract.path / "dicom"))
    assert remeasured.k >= 5
    assert remeasured.k == risk["k"]
    levels = risk["reduction"]["levels"]
    people = patients(extract.path)
    assert len(people) == 12 - risk["reduction"]["suppressed_patients"]
    if levels["age"] >= 1:
        assert not any("birthDate" in p for p in people)
        for p in people:
            bands = [e["valueString"] for e in p.get("extension", [])
                     if e["url"] == AGE_BAND_URL]
            assert bands == [] or "-" in bands[0]
        for ds in headers(extract.path):
            assert "PatientBirthDate" not in ds
            assert "PatientAge" not in ds
    if levels["sex"] >= 1:
        assert not any("gender" in p for p in people)
        assert all("PatientSex" not in ds for ds in headers(extract.path))
    # Every image left belongs to a patient left.
    ids = {i["value"] for p in people for i in p.get("identifier", [])}
    assert {str(ds.PatientID) for ds in headers(extract.path)} <= ids


def test_a_job_runs_over_an_extract_only_as_policies_jobs_extract_says(site: Site,
                                                                       tmp_path: Path):
    """The staging summary carries the policy's word on the extract's risk, and how the
    extract was made, never its figures (those stay in report.json). An extract whose
    risk cannot be measured (here: no patients) is refused and the job fails at staging
    with the reason, unless the institution's policy accepts it. A DICOM-only node is
    measured from its headers."""
    from gateway.node.jobs.endpoints import staging_summary_path
    from gateway.node.jobs.runtime import make_stage, work_dir_of
    from gateway.node.jobs.staging_errors import RiskRefused

    sessions = _node_with_permit(tmp_path, "P-RISK")
    settings = site.settings.model_copy(update={"data_dir": tmp_path / "var"})
    job = type("Job", (), {"id": "job-1", "pid": "P-RISK"})()
    summary_path = staging_summary_path(work_dir_of(settings, "site-a"), "job-1")

    extract = make_stage(site.node, settings, site.policy, sessions)(job)
    assert (extract / "report.json").is_file()
    summary = json.loads(summary_path.read_text())
    assert summary["risk_ok"] is True
    assert summary["allowed"] is True
    assert summary["generalised"]  # 12 patients: something had to give
    assert isinstance(summary["suppressed"], bool)  # whether, not how many
    figures = {"counts", "risk", "k", "max_risk", "suppressed_patients", "seconds"}
    assert not figures & set(summary), summary

    dicom_only = NodeConfig("site-a", "Site A", "sqlite://", dicom=site.node.dicom)
    settings = settings.model_copy(update={"data_dir": tmp_path / "var-dicom-only"})
    summary_path = staging_summary_path(work_dir_of(settings, "site-a"), "job-1")
    extract = make_stage(dicom_only, settings, site.policy, sessions)(job)
    summary = json.loads(summary_path.read_text())
    # The basic profile leaves no age or sex in the headers: every imaged patient, one class.
    imaged = {str(ds.PatientID) for ds in headers(extract)}
    assert len(imaged) >= 5
    report = json.loads((extract / "report.json").read_text())  # the operator's figures
    assert (report["risk"]["ok"], report["risk"]["k"]) == (True, len(imaged))
    assert (summary["risk_ok"], summary["allowed"]) == (True, True)

    (tmp_path / "empty").mkdir()
    nobody = NodeConfig("site-a", "Site A", "sqlite://", fhir=f"ndjson:{tmp_path / 'empty'}")
    settings = settings.model_copy(update={"data_dir": tmp_path / "var-nobody"})
    summary_path = staging_summary_path(work_dir_of(settings, "site-a"), "job-1")
    with pytest.raises(RiskRefused, match="denied: .*no patients staged"):
        make_stage(nobody, settings, site.policy, sessions)(job)
    assert json.loads(summary_path.read_text())["allowed"] is False

    # The institution's edit of its policy, as an operator would make it.
    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    rules = policies / "jobs" / "jobs.rego"
    rules.write_text(rules.read_text().replace("accept_risk_above_threshold := false",
                                               "accept_risk_above_threshold := true"))
    lenient = PolicyService(EmbeddedEngine(policies))
    assert make_stage(nobody, settings, lenient, sessions)(job).is_dir()
    assert json.loads(summary_path.read_text())["allowed"] is True


def test_suppression_that_makes_a_code_rare_is_followed_by_another_round(tmp_path: Path):
    """I10 is common (5 holders) when Datafly decides, so it is no quasi-identifier; the
    four holders it suppresses leave one, for whom I10 is now rare and singles them out.
    The files are measured again and that patient suppressed too."""
    from gateway.node.jobs.staging import _risk
    from spe.anonymize.extract import ICD10

    fhir, dicom = tmp_path / "fhir", tmp_path / "dicom"
    fhir.mkdir()
    dicom.mkdir()
    people = [("a1", "1990-01-01", "female")] + [
        (f"b{i}", f"192{i}-01-01", "male") for i in range(1, 5)] + [
        (f"c{i}", "1990-01-01", "female") for i in range(15)]
    (fhir / "Patient.ndjson").write_text("".join(json.dumps({
        "resourceType": "Patient", "id": pid, "birthDate": born, "gender": sex,
        "address": [{"postalCode": "28", "country": "ES"}]}) + "\n"
        for pid, born, sex in people))
    (fhir / "Condition.ndjson").write_text("".join(json.dumps({
        "resourceType": "Condition", "id": f"cond-{pid}",
        "subject": {"reference": f"Patient/{pid}"}, "recordedDate": "2020-06-01",
        "code": {"coding": [{"system": ICD10, "code": "I10"}]}}) + "\n"
        for pid in ("a1", "b1", "b2", "b3", "b4")))
    decision = {"layers": ["risk"], "k_min": 2, "max_risk": None, "max_suppression": 0.25,
                "qi_weights": {}}
    risk = _risk(fhir, dicom, decision)
    assert risk["before"]["k"] == 1
    assert risk["ok"] is True
    assert risk["k"] >= 2
    assert risk["reduction"]["suppression_rounds"] == 1
    assert risk["reduction"]["suppressed_patients"] == 5
    left = {p["id"] for p in patients(tmp_path)}
    assert left == {f"c{i}" for i in range(15)}
    assert not (fhir / "Condition.ndjson").read_text().strip()


def test_a_dicom_only_extract_is_reduced_from_its_headers(tmp_path: Path):
    """Headers kept under the Retain Patient Characteristics option are quasi-identifiers:
    one 90-year-old man among 15 women of 40 is k = 1 until he is suppressed or age and
    sex go; measured again from the files, the extract holds k >= 5."""
    from gateway.node.jobs.staging import _risk, staged_records
    from spe.anonymize.risk import measure
    from tests.spe.anonymize.test_risk_apply import _image

    fhir, dicom = tmp_path / "fhir", tmp_path / "dicom"
    fhir.mkdir()
    dicom.mkdir()
    for i in range(15):
        _image(dicom, f"W{i:02}", sex="F", age="040Y")
    outlier = _image(dicom, "M90", sex="M", age="090Y")
    decision = {"layers": ["risk"], "k_min": 5, "max_risk": None, "max_suppression": 0.1,
                "qi_weights": {}}
    risk = _risk(fhir, dicom, decision)
    assert risk["before"]["k"] == 1
    assert risk["ok"] is True
    assert risk["reduction"]["applied"] is True
    remeasured = measure(staged_records(fhir, dicom))
    assert remeasured.k >= 5
    assert remeasured.k == risk["k"]
    if risk["reduction"]["suppressed_patients"]:
        assert not outlier.exists()
    else:
        assert "PatientAge" not in pydicom.dcmread(outlier)
