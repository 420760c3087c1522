"""Staging from a PACS (gateway/node/jobs/staging_remote.py, sources/dimse_retrieve.py),
against a real Orthanc configured as many hospital PACS are: it refuses C-GET to the node's
AE title and sends by C-MOVE to the node's Storage SCP, whose port it has been told.

The extract from DIMSE and from DICOMweb is compared with the one a folder of the same
files gives: WADO-RS returns the stored files and its extract is the folder's byte for
byte; C-MOVE carries no file meta (PS3.10 meta is a file's, not the network's), so the
synthetic ultrasound images whose masking rule is keyed on the generator's file meta
(ImplementationVersionName, spe/anonymize/dicom/data/burned-in-regions.json) cannot be
recognised and are excluded (fail closed); every other file is the folder's byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from gateway.node.config import NodeConfig, SourceSpecError, open_dicom_source
from gateway.node.jobs.staging import StagedExtract, StagingError, stage
from gateway.node.orthanc_process import OrthancError, OrthancProcess, free_port
from spe.policy.service import Decision, PolicyService, make_policy_service
from spe.settings import REPO_ROOT, Settings
from spe.synth import generate
from tests.orthanc import require_orthanc

SECRET = "pacs-staging-secret-0123456789abcdef"
MISSING_STUDY = "1.2.826.0.1.3680043.10.543.404"


@dataclass
class Permit:
    pid: str
    form: str = "pseudonymised"
    status: str = "issued"
    start: date = date(2020, 1, 1)
    end: date = date(2099, 12, 31)


@dataclass(frozen=True)
class Site:
    root: Path
    settings: Settings
    policy: PolicyService
    pacs: OrthancProcess
    store_port: int
    folder: StagedExtract
    studies: list[str]

    def node(self, dicom: str) -> NodeConfig:
        return NodeConfig("site-a", "Site A", "sqlite://", dicom=dicom,
                          fhir=f"ndjson:{self.root / 'fhir'}")

    def dimse(self, **options: str) -> str:
        options = {"listen": f"127.0.0.1:{self.store_port}", **options}
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"dimse://{self.pacs.aet}@127.0.0.1:{self.pacs.dicom_port}?{query}"

    def stage(self, dicom: str, cache: Path, **kw) -> StagedExtract:
        return stage(kw.pop("permit", Permit("P-PACS")), node=self.node(dicom),
                     settings=self.settings, policy=self.policy, cache_dir=cache,
                     data_version="v1", **kw)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    require_orthanc()
    out = tmp_path_factory.mktemp("synth")
    generate(out, institutions=1, patients=12, seed=7)
    root = out / "site-a"
    files = sorted((root / "dicom").rglob("*.dcm"))
    studies = sorted({str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID)
                      for f in files})
    store_port = free_port()
    # The node's AE title may C-FIND and C-MOVE (to 127.0.0.1:store_port) but not C-GET;
    # a second AE title may C-FIND only.
    # A third has C-MOVE allowed, but the PACS has a wrong port for it; a fourth, SPE-GET,
    # may C-GET.
    pacs = OrthancProcess(out / "orthanc", peers={"SPE-NODE": store_port,
                                                  "SPE-NOMOVE": free_port(),
                                                  "SPE-WRONGPORT": free_port(),
                                                  "SPE-GET": free_port()},
                          http_password=None,
                          peer_options={"SPE-NODE": {"AllowGet": False, "AllowMove": True},
                                        "SPE-NOMOVE": {"AllowGet": False},
                                        "SPE-WRONGPORT": {"AllowGet": False,
                                                          "AllowMove": True},
                                        "SPE-GET": {"AllowGet": True}})
    try:
        pacs.start()
    except OrthancError as exc:
        pytest.fail(f"Orthanc did not start: {exc}")
    try:
        assert pacs.upload(files) == len(files)
        settings = Settings(data_dir=out / "var", secret_key=SECRET)
        policy = make_policy_service(settings)
        folder = stage(Permit("P-PACS"), node=NodeConfig(
            "site-a", "Site A", "sqlite://", dicom=f"folder:{root / 'dicom'}",
            fhir=f"ndjson:{root / 'fhir'}"), settings=settings, policy=policy,
            cache_dir=out / "cache-folder", data_version="v1")
        yield Site(root, settings, policy, pacs, store_port, folder, studies)
    finally:
        pacs.stop()


def outputs(extract: Path) -> dict[str, bytes]:
    files = {p.relative_to(extract / "dicom").as_posix(): p.read_bytes()
             for p in sorted((extract / "dicom").rglob("*.dcm"))}
    assert files
    return files


def figures(report: dict) -> dict:
    """What a report says of the extract, without how long it took or how it was read."""
    dicom = {k: v for k, v in report["counts"]["dicom"].items()
             if k not in ("seconds", "retrieval")}
    fhir = {k: v for k, v in report["counts"]["fhir"].items() if k != "seconds"}
    return {"dicom": dicom, "fhir": fhir, "risk": report["risk"], "layers": report["layers"],
            "excluded": [(f["outcome"], f["reason"]) for f in report["excluded_files"]]}


def burned_in_by_meta_rule(site: Site) -> set[str]:
    """The folder extract's outputs that were burned-in images masked by the rule keyed on
    the generator's file meta: the ones C-MOVE cannot bring as such."""
    names = set()
    for name in outputs(site.folder.path):
        ds = pydicom.dcmread(site.folder.path / "dicom" / name, stop_before_pixels=True)
        if "BurnedInAnnotation" in ds and ds.get("Modality") == "US":
            names.add(name)
    return names


def no_finished_extract(cache: Path) -> bool:
    return not list(cache.rglob("report.json"))


# --- the extract ---------------------------------------------------------------------------


def test_wado_rs_extract_is_the_folder_extract_byte_for_byte(site: Site, tmp_path: Path):
    steps: list[tuple[str, int, int]] = []
    web = site.stage(f"dicomweb:{site.pacs.dicomweb_url}", tmp_path,
                     progress=lambda *a: steps.append(a))
    assert outputs(web.path) == outputs(site.folder.path)
    assert web.report["counts"]["dicom"]["retrieval"] == {
        "by": "WADO-RS", "studies": len(site.studies), "studies_resumed": 0}
    assert figures(web.report) == figures(site.folder.report)
    assert (web.path / "fhir" / "Patient.ndjson").read_bytes() == (
        site.folder.path / "fhir" / "Patient.ndjson").read_bytes()
    dicom_steps = [s for s in steps if s[0] == "dicom"]
    total = web.report["counts"]["dicom"]["files_in"]
    assert dicom_steps[0] == ("dicom", 0, total)
    assert dicom_steps[-1] == ("dicom", total, total)
    assert [d for _, d, _ in dicom_steps] == sorted(d for _, d, _ in dicom_steps)
    # Nothing of the build's bookkeeping is in the extract the job reads.
    assert sorted(p.name for p in web.path.iterdir()) == ["dicom", "fhir", "report.json"]


def test_c_move_extract_is_the_folder_extract_when_the_pacs_refuses_c_get(site: Site,
                                                                         tmp_path: Path):
    steps: list[tuple[str, int, int]] = []
    moved = site.stage(site.dimse(), tmp_path, progress=lambda *a: steps.append(a))
    assert moved.report["counts"]["dicom"]["retrieval"]["by"] == "C-MOVE"  # auto fell back
    folder, dimse = outputs(site.folder.path), outputs(moved.path)
    meta_rule = burned_in_by_meta_rule(site)
    assert set(folder) - set(dimse) <= meta_rule
    assert set(dimse) <= set(folder)
    assert len(dimse) > 0.9 * len(folder)
    for name, data in dimse.items():  # the same bytes, file meta included
        assert data == folder[name], name
    counts, expected = moved.report["counts"]["dicom"], site.folder.report["counts"]["dicom"]
    assert counts["files_in"] == expected["files_in"]
    lost = len(set(folder) - set(dimse))
    assert (counts["files_out"], counts["excluded"]) == (
        expected["files_out"] - lost, expected["excluded"] + lost)
    reasons = {f["reason"] for f in moved.report["excluded_files"]}
    assert not lost or any("no masking region is known" in r for r in reasons)
    # The risk figures are those of the folder's extract less the excluded images' headers
    # (the same patients: each has other images).
    assert moved.report["risk"]["records"] == site.folder.report["risk"]["records"]
    total = counts["files_in"]
    assert ("dicom", total, total) in steps
    assert sum(1 for s in steps if s[0] == "dicom") > len(site.studies)  # per instance


class NoRiskLayer(PolicyService):
    """The institution's policy without layer 3: four patients would all be suppressed,
    leaving nothing to compare."""

    def __init__(self, real: PolicyService) -> None:
        self.real = real

    def decide(self, policy: str, input: dict) -> Decision:
        decision = self.real.decide(policy, input)
        layers = [x for x in decision.values.get("layers", []) if x != "risk"]
        return replace(decision, values={**decision.values, "layers": layers})


@pytest.mark.parametrize("mode", ["get", "auto"])
def test_c_get_where_the_pacs_allows_it_gives_the_same_extract(site: Site, tmp_path: Path,
                                                               mode: str):
    got = site.stage(site.dimse(aet="SPE-GET", retrieve=mode), tmp_path)
    assert got.report["counts"]["dicom"]["retrieval"]["by"] == "C-GET"
    folder, dimse = outputs(site.folder.path), outputs(got.path)
    assert set(folder) - set(dimse) <= burned_in_by_meta_rule(site)
    for name, data in dimse.items():
        assert data == folder[name], name


def test_c_move_and_folder_agree_byte_for_byte_without_meta_keyed_images(tmp_path: Path):
    """A set without images that need a file-meta-keyed masking rule: C-MOVE's extract is
    the folder's, every file and every report figure."""
    from tests.gateway.node.dicom_set import make_dicom_set

    require_orthanc()
    files = make_dicom_set(tmp_path / "set").files
    store = free_port()
    pacs = OrthancProcess(tmp_path / "orthanc", peers={"SPE-NODE": store}, http_password=None,
                          peer_options={"SPE-NODE": {"AllowGet": False, "AllowMove": True}})
    pacs.start()
    try:
        pacs.upload(files)
        settings = Settings(data_dir=tmp_path / "var", secret_key=SECRET)
        policy = NoRiskLayer(make_policy_service(settings))

        def staged(dicom: str, cache: str) -> StagedExtract:
            return stage(Permit("P-SET"), node=NodeConfig("n", "n", "sqlite://", dicom=dicom),
                         settings=settings, policy=policy, cache_dir=tmp_path / cache,
                         data_version="v1")

        folder = staged(f"folder:{tmp_path / 'set'}", "folder")
        moved = staged(f"dimse://ORTHANC@127.0.0.1:{pacs.dicom_port}?retrieve=move&"
                       f"listen=127.0.0.1:{store}", "move")
    finally:
        pacs.stop()
    assert outputs(moved.path) == outputs(folder.path)
    assert figures(moved.report) == figures(folder.report)
    assert moved.report["counts"]["dicom"]["retrieval"]["by"] == "C-MOVE"


# --- refusals and failures -----------------------------------------------------------------


def test_c_get_only_at_a_pacs_that_refuses_it_says_so(site: Site, tmp_path: Path):
    with pytest.raises(StagingError, match="refused C-GET") as caught:
        site.stage(site.dimse(retrieve="get"), tmp_path)
    assert caught.value.status_code == 409
    assert no_finished_extract(tmp_path)


def test_a_move_the_pacs_refuses_says_why(site: Site, tmp_path: Path):
    """Orthanc aborts the association of an AE title it allows no C-MOVE; one it sends to
    a port where the node does not listen ends the move with a failure status, named."""
    with pytest.raises(StagingError) as caught:
        site.stage(site.dimse(aet="SPE-NOMOVE", retrieve="move"), tmp_path)
    message = str(caught.value)
    assert "refused C-MOVE" in message
    assert "association aborted" in message
    assert "SPE-NOMOVE" in message  # the AE title the PACS must know
    assert no_finished_extract(tmp_path)

    with pytest.raises(StagingError) as caught:
        site.stage(site.dimse(aet="SPE-WRONGPORT", retrieve="move",
                              listen=f"127.0.0.1:{free_port()}"), tmp_path)
    message = str(caught.value)
    assert "refused C-MOVE" in message
    assert re.search(r"status 0x[0-9A-F]{4} \(\w+", message), message
    assert "Traceback" not in message
    assert no_finished_extract(tmp_path)


def test_a_listen_port_in_use_is_a_staging_error(site: Site, tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StagingError, match=f"cannot listen on 127.0.0.1:{port}"):
            site.stage(site.dimse(retrieve="move", listen=f"127.0.0.1:{port}"), tmp_path,
                       studies=site.studies[:1])
    assert no_finished_extract(tmp_path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
def test_an_unreachable_pacs_is_a_staging_error(site: Site, tmp_path: Path, kind: str):
    port = _closed_port()
    spec = (f"dimse://ORTHANC@127.0.0.1:{port}?retrieve=move" if kind == "dimse"
            else f"dicomweb:http://127.0.0.1:{port}/dicom-web")
    with pytest.raises(StagingError, match="cannot list") as caught:
        site.stage(spec, tmp_path, studies=site.studies[:1])
    assert "refused" in str(caught.value).lower() or "connect" in str(caught.value).lower()
    assert no_finished_extract(tmp_path)


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
def test_a_study_the_pacs_no_longer_has_is_named(site: Site, tmp_path: Path, kind: str):
    spec = site.dimse() if kind == "dimse" else f"dicomweb:{site.pacs.dicomweb_url}"
    with pytest.raises(StagingError, match=f"study {MISSING_STUDY} .* no longer at the PACS"):
        site.stage(spec, tmp_path, studies=[*site.studies[:2], MISSING_STUDY])
    assert no_finished_extract(tmp_path)
    # Checked before anything was retrieved: no image of the other studies was written.
    assert not list(tmp_path.rglob("*.dcm"))


def test_bad_dimse_options_are_refused_with_the_reason():
    good = open_dicom_source("dimse://PACS@pacs.example:104?aet=NODE-A&retrieve=move&"
                             "listen=0.0.0.0:11113")
    assert (good.calling_aet, good.store_aet, good.retrieve_mode, good.listen) == (
        "NODE-A", "NODE-A", "move", ("0.0.0.0", 11113))
    plain = open_dicom_source("dimse://PACS@pacs.example:104")
    assert (plain.calling_aet, plain.retrieve_mode, plain.listen) == (
        "SPE-NODE", "auto", ("0.0.0.0", 11112))
    for spec, reason in [
        ("dimse://PACS@h:104?retrieve=copy", "retrieve= must be one of auto, get, move"),
        ("dimse://PACS@h:104?listen=11112", "listen= must be HOST:PORT"),
        ("dimse://PACS@h:104?aet=THIS-TITLE-IS-TOO-LONG", "no AE title"),
        ("dimse://PACS@h:104?move=x", "options are aet, listen, retrieve"),
        ("dimse://PACS@h:104?aet=A&aet=B", "each once"),
        ("dimse://PACS@h:notaport", "must look like"),
    ]:
        with pytest.raises(SourceSpecError, match=reason):
            open_dicom_source(spec)


# --- an attacker at the Storage SCP's port -------------------------------------------------


def _forged(sop_class: str, study_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "FORGED-BY-INTRUDER"
    ds.PatientName = "Intruder^Forged"
    ds.Modality = "MR"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_a_stranger_cannot_store_into_a_move(site: Site, tmp_path: Path):
    """While the PACS sends a study, another party reaches the node's Storage SCP: under
    its own AE title it is refused the association; under the PACS's AE title its object
    (not one the C-FIND listed) is refused with a failure status. The extract holds none."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True)
               for f in sorted((site.root / "dicom").rglob("*.dcm"))]
    # The study moved first (they go in UID order): its SOP classes are the SCP's now.
    first = next(h for h in headers if str(h.StudyInstanceUID) == site.studies[0])
    seen: dict[str, object] = {}

    def attack(step: str, done: int, total: int) -> None:
        if step != "dicom" or done != 1 or seen:
            return
        for title in ("INTRUDER", site.pacs.aet):
            ae = AE(ae_title=title)
            ae.add_requested_context(str(first.SOPClassUID), ExplicitVRLittleEndian)
            assoc = ae.associate("127.0.0.1", site.store_port, ae_title="SPE-NODE")
            if not assoc.is_established:
                seen[title] = "rejected"
                continue
            status = assoc.send_c_store(_forged(str(first.SOPClassUID),
                                                str(first.StudyInstanceUID)))
            seen[title] = int(status.Status) if "Status" in status else None
            assoc.release()

    moved = site.stage(site.dimse(retrieve="move"), tmp_path, progress=attack)
    assert seen == {"INTRUDER": "rejected", site.pacs.aet: 0xC000}
    assert moved.report["counts"]["dicom"]["files_in"] == (
        site.folder.report["counts"]["dicom"]["files_in"])
    for path in (moved.path / "dicom").rglob("*.dcm"):
        assert b"FORGED" not in path.read_bytes()


# --- resuming ------------------------------------------------------------------------------

KILLED_STAGING = """
import json, os, signal, sys
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from gateway.node.config import NodeConfig
from gateway.node.jobs.staging import stage
from spe.policy.service import make_policy_service
from spe.settings import Settings

@dataclass
class Permit:
    pid: str
    form: str = "pseudonymised"
    status: str = "issued"
    start: date = date(2020, 1, 1)
    end: date = date(2099, 12, 31)

args = json.loads(sys.argv[1])
settings = Settings(data_dir=Path(args["cache"]) / "var", secret_key=args["secret"])

def progress(step, done, total):
    if step == "dicom" and done >= args["kill_after"]:
        os.kill(os.getpid(), signal.SIGKILL)  # a worker killed mid-staging

stage(Permit("P-PACS"), node=NodeConfig("site-a", "Site A", "sqlite://", dicom=args["dicom"],
      fhir=args["fhir"]), settings=settings, policy=make_policy_service(settings),
      cache_dir=Path(args["cache"]), data_version="v1", progress=progress)
"""


def test_a_staging_killed_mid_way_resumes_where_it_stopped(site: Site, tmp_path: Path):
    total = site.folder.report["counts"]["dicom"]["files_in"]
    args = {"cache": str(tmp_path), "secret": SECRET, "dicom": site.dimse(retrieve="move"),
            "fhir": f"ndjson:{site.root / 'fhir'}", "kill_after": total // 2}
    killed = subprocess.run([sys.executable, "-c", KILLED_STAGING, json.dumps(args)],
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert no_finished_extract(tmp_path)
    partial = tmp_path / "P-PACS" / ".v1.partial"
    done_before = len(list((partial / ".studies").glob("*.json")))
    assert 0 < done_before < len(site.studies)

    steps: list[tuple[str, int, int]] = []
    resumed = site.stage(site.dimse(retrieve="move"), tmp_path,
                         progress=lambda *a: steps.append(a))
    retrieval = resumed.report["counts"]["dicom"]["retrieval"]
    assert retrieval["studies_resumed"] == done_before
    first = next(s for s in steps if s[0] == "dicom")
    assert first[1] > 0  # the finished studies count as done from the start
    moved = outputs(resumed.path)
    folder = outputs(site.folder.path)
    assert set(folder) - set(moved) <= burned_in_by_meta_rule(site)
    for name, data in moved.items():
        assert data == folder[name], name
    assert resumed.report["counts"]["dicom"]["files_in"] == total
    assert not partial.exists()
    assert sorted(p.name for p in resumed.path.iterdir()) == ["dicom", "fhir", "report.json"]


def test_an_anonymised_permit_never_resumes_a_partial_build(site: Site, tmp_path: Path):
    """Its one-off key is gone with the killed process: a partial build under it is
    thrown away, never extended under another key."""
    partial = tmp_path / "P-ANON" / ".v1.partial"
    (partial / ".studies").mkdir(parents=True)
    (partial / "dicom" / "1.2.3").mkdir(parents=True)
    (partial / "dicom" / "1.2.3" / "stale.dcm").write_bytes(b"left by an earlier attempt")
    extract = site.stage(f"dicomweb:{site.pacs.dicomweb_url}", tmp_path,
                         permit=Permit("P-ANON", "anonymised"))
    assert not (extract.path / "dicom" / "1.2.3").exists()
    assert extract.report["counts"]["dicom"]["retrieval"]["studies_resumed"] == 0


class Interrupted(Exception):
    pass


def test_a_partial_build_is_resumed_only_under_the_same_node_secret(site: Site,
                                                                    tmp_path: Path):
    """The permit key comes from the node's secret: studies finished under another secret
    would carry other pseudonyms than the rest, so they are staged again."""
    from pydantic import SecretStr

    web = f"dicomweb:{site.pacs.dicomweb_url}"
    markers = tmp_path / "P-PACS" / ".v1.partial" / ".studies"

    def interrupt(step: str, done: int, total: int) -> None:
        if step == "dicom" and done and any(markers.glob("*.json")):
            raise Interrupted

    with pytest.raises(Interrupted):
        site.stage(web, tmp_path, studies=site.studies[:3], progress=interrupt)
    assert any(markers.glob("*.json"))
    other = site.settings.model_copy(update={"secret_key": SecretStr(SECRET[::-1])})
    again = stage(Permit("P-PACS"), node=site.node(web), settings=other, policy=site.policy,
                  cache_dir=tmp_path, data_version="v1", studies=site.studies[:3])
    assert again.report["counts"]["dicom"]["retrieval"]["studies_resumed"] == 0


def test_an_older_versions_partial_build_is_removed_once_a_newer_one_is_staged(
        site: Site, tmp_path: Path):
    stale = tmp_path / "P-PACS" / ".v0.partial"
    (stale / ".studies").mkdir(parents=True)
    site.stage(f"dicomweb:{site.pacs.dicomweb_url}", tmp_path, studies=site.studies[:1])
    assert not stale.exists()
    assert [p.name for p in (tmp_path / "P-PACS").iterdir() if p.name.endswith(".partial")
            ] == []


# --- a job under a permit at a node in front of the PACS -----------------------------------

COUNT_IMAGES = """
import pathlib
images = list(pathlib.Path("/extract/dicom").rglob("*.dcm"))
with open("/output/counts.csv", "w") as f:
    f.write("group,n\\n")
    f.write(f"all,{len(images) * 10}\\n")
print("images", len(images))
"""


@pytest.mark.usefixtures("needs_sandbox")
@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
def test_a_job_under_a_permit_succeeds_at_a_node_reading_the_pacs(site: Site, tmp_path: Path,
                                                                   kind: str,
                                                                   database_url: str):
    """The node syncs its index from the PACS, a job under a permit is queued, and the
    node's own runner (gateway/node/jobs/runtime.py: the index's studies, staged by C-MOVE
    or WADO-RS) runs it in the sandbox over the extract."""
    from datetime import UTC, datetime

    from gateway.node.app import NODE_AUDIT
    from gateway.node.config import open_fhir_source
    from gateway.node.jobs import repository as repo
    from gateway.node.jobs.runtime import cache_dir_of, make_stage
    from gateway.node.jobs.worker import Worker
    from gateway.node.permits.models import NodePermit
    from gateway.node.sync import sync_index
    from spe.db import make_engine, make_sessionmaker, session_scope
    from spe.db.migrate import upgrade
    from spe.wire.code_archive import pack_code
    from spe.wire.jobs import LOG_NAME

    spec = site.dimse(retrieve="move") if kind == "dimse" else (
        f"dicomweb:{site.pacs.dicomweb_url}")
    node = site.node(spec)
    upgrade(database_url, "node")
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    with session_scope(sessions) as session:
        sync_index(session, dicom=open_dicom_source(spec), fhir=open_fhir_source(node.fhir))
        session.add(NodePermit(pid="P-JOB", seq=1, status="issued", members=["carol@demo"],
                               datasets=["site-a/x"], form="pseudonymised",
                               start=date(2020, 1, 1), end=date(2099, 12, 31), document="",
                               received_at=datetime.now(UTC)))
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text(COUNT_IMAGES)
    with session_scope(sessions) as session:
        job_id = repo.enqueue(session, pid="P-JOB", user_id="carol@demo",
                              code=pack_code(code), limits={
                                  "cpu_seconds": 20, "memory_mb": 1024, "processes": 64,
                                  "open_files": 64, "file_size_mb": 20, "output_mb": 50,
                                  "scratch_mb": 64, "wall_seconds": 30}).id
    settings = site.settings.model_copy(update={"data_dir": tmp_path / "var"})
    worker = Worker(sessions, NODE_AUDIT, worker_id="w1", work_dir=tmp_path / "work",
                    stage=make_stage(node, settings, site.policy, sessions))
    try:
        assert worker.run_once()
        with session_scope(sessions) as session:
            job = repo.get(session, job_id)
            state, reason = job.state, job.reason
    finally:
        engine.dispose()
    log = (tmp_path / "work" / job_id / "output" / LOG_NAME).read_text()
    assert state == "succeeded", (reason, log)
    [extract] = [p for p in (cache_dir_of(settings, "site-a") / "P-JOB").iterdir()
                 if p.is_dir() and not p.name.startswith(".")]
    report = json.loads((extract / "report.json").read_text())
    assert report["counts"]["dicom"]["retrieval"]["by"] == (
        "C-MOVE" if kind == "dimse" else "WADO-RS")
    assert report["counts"]["dicom"]["retrieval"]["studies"] == len(site.studies)
    images = len(list((extract / "dicom").rglob("*.dcm")))
    assert images > 0
    assert f"images {images}" in log
