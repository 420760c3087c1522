"""The node's data sources: a DICOM folder, Orthanc over DIMSE and DICOMweb, FHIR files.

The DICOM test set (`dicom_set.py`, fixture `dicom_set` in `conftest.py`) is written with
pydicom: four patients, five studies, eleven series of MR, CT and CR images with 8x8 pixels
(one patient in UTF-8), as valid Part-10 files in a nested folder. The same files are
uploaded to a real Orthanc, and the three DICOM sources must describe them alike.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from gateway.node.sources import (
    DicomFolderSource,
    DicomSource,
    DicomWebSource,
    DimseSource,
    FhirBundleSource,
    FhirItem,
    FhirNdjsonSource,
    FhirSource,
    Skipped,
    SourceError,
    StudyRecord,
    folder,
)
from tests.gateway.node.dicom_set import DicomSet, make_dicom_set, uid

CALLING_AET = "SPE-TEST"


def add_junk(root: Path) -> None:
    (root / "junk.dcm").write_text("this is not DICOM\n")  # skipped: no DICM prefix
    (root / "P002" / "NOTES").write_bytes(b"\x00" * 300)  # skipped: extension-less, no DICM
    (root / "README.txt").write_text("ignored: not a DICOM file name\n")
    (root / ".DS_Store").write_bytes(b"\x00\x01")  # ignored: hidden


def summary(records: list[StudyRecord]) -> list[tuple]:
    """What every DICOM source must agree on, whatever the store."""
    return [
        (s.study_uid, s.patient_id, s.study_date,
         tuple((se.series_uid, se.modality, se.instance_count) for se in s.series))
        for s in records
    ]


def expected_summary(dicom_set: DicomSet) -> list[tuple]:
    return [
        (uid_, e["patient_id"], e["date"],
         tuple((se_uid, se["modality"], len(se["sops"]))
               for se_uid, se in sorted(e["series"].items())))
        for uid_, e in sorted(dicom_set.studies.items())
    ]


def studies_of(source: DicomSource) -> tuple[list[StudyRecord], list[Skipped]]:
    studies: list[StudyRecord] = []
    skipped: list[Skipped] = []
    for item in source.studies():
        (skipped if isinstance(item, Skipped) else studies).append(item)
    return studies, skipped


# ---------------------------------------------------------------------------- folder


def test_folder_source_lists_studies_series_and_counts(tmp_path: Path):
    data = make_dicom_set(tmp_path / "dicom")
    add_junk(data.root)
    source = DicomFolderSource(data.root)
    assert isinstance(source, DicomSource)
    ticks: list[int] = []

    items = list(source.studies(ticks.append))
    studies = [i for i in items if isinstance(i, StudyRecord)]
    skipped = [i for i in items if isinstance(i, Skipped)]

    assert summary(studies) == expected_summary(data)
    assert [s.study_uid for s in studies] == sorted(data.studies)
    assert sum(ticks) == len(data.files) + 2  # every file read, the two skipped included
    assert sorted(s.where for s in skipped) == ["P002/NOTES", "junk.dcm"]
    assert all("DICM" in s.reason for s in skipped)
    for study in studies:
        want = data.studies[study.study_uid]
        assert (study.patient_sex, study.patient_birth_date) == (want["sex"], want["birth"])
        assert (study.accession_number, study.description) == (
            want["accession"], want["description"])
        for series in study.series:
            se = want["series"][series.series_uid]
            assert (series.series_number, series.body_part, series.manufacturer,
                    series.description) == (se["number"], se["body_part"],
                                            se["manufacturer"], se["description"])
    # Deterministic: a second walk gives the same records.
    assert studies_of(DicomFolderSource(data.root))[0] == studies


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_folder_source_reads_the_same_with_worker_processes(tmp_path: Path, monkeypatch,
                                                            method: str):
    """Big folders are read by processes; small batches force that path here."""
    data = make_dicom_set(tmp_path / "dicom")
    add_junk(data.root)
    first = pydicom.dcmread(data.files[0])
    del first.SeriesInstanceUID  # a file that must not claim its study's attributes
    first.save_as(data.root / "0-no-series.dcm", enforce_file_format=True)
    sequential = list(DicomFolderSource(data.root, workers=1).studies())
    monkeypatch.setattr(folder, "BATCH", 2)
    if method == "spawn":  # what a threaded server gets
        monkeypatch.setattr(folder.threading, "active_count", lambda: 2)
    ticks: list[int] = []
    parallel = list(DicomFolderSource(data.root, workers=2).studies(ticks.append))
    assert parallel == sequential
    assert sum(ticks) == len(data.files) + 3
    assert summary([i for i in parallel if isinstance(i, StudyRecord)]) == expected_summary(data)


def test_folder_source_skips_headers_without_uids_and_counts_duplicates_once(tmp_path: Path):
    data = make_dicom_set(tmp_path / "dicom")
    first = data.files[0]
    ds = pydicom.dcmread(first)
    del ds.SeriesInstanceUID
    ds.save_as(data.root / "no-series.dcm", enforce_file_format=True)
    (data.root / "copy").mkdir()
    (data.root / "copy" / "same.dcm").write_bytes(first.read_bytes())  # same SOP UID again
    (data.root / "truncated.dcm").write_bytes(first.read_bytes()[:140])

    studies, skipped = studies_of(DicomFolderSource(data.root))

    assert summary(studies) == expected_summary(data)
    reasons = {s.where: s.reason for s in skipped}
    assert reasons["no-series.dcm"] == "no SeriesInstanceUID in the header"
    assert set(reasons) == {"no-series.dcm", "truncated.dcm"}


def test_folder_retrieve_copies_one_study(tmp_path: Path, dicom_set: DicomSet):
    source = DicomFolderSource(dicom_set.root)
    study_uid = sorted(dicom_set.studies)[0]
    # Without a prior walk, and after one (from the cached file list).
    for _ in range(2):
        dest = tmp_path / f"out{_}"
        files = source.retrieve(study_uid, dest)
        assert {pydicom.dcmread(f).SOPInstanceUID for f in files} == dicom_set.sops(study_uid)
        assert {f.name for f in files} == {f"{s}.dcm" for s in dicom_set.sops(study_uid)}
        list(source.studies())
    assert source.retrieve("1.2.3.4", tmp_path / "none") == []


def test_folder_source_missing_folder_is_a_source_error(tmp_path: Path):
    with pytest.raises(SourceError, match="does not exist"):
        list(DicomFolderSource(tmp_path / "nope").studies())


# ---------------------------------------------------------------------------- Orthanc


@pytest.fixture(scope="module")
def pacs(orthanc, dicom_set: DicomSet):
    """The session's Orthanc with the test set uploaded."""
    assert orthanc.upload(dicom_set.files) == len(dicom_set.files)
    return orthanc


def dimse_source(pacs) -> DimseSource:
    return DimseSource("127.0.0.1", pacs.dicom_port, pacs.aet, calling_aet=CALLING_AET)


@pytest.mark.orthanc
def test_folder_dimse_and_dicomweb_sources_agree(pacs, dicom_set: DicomSet):
    ours = set(dicom_set.studies)
    sources: list[DicomSource] = [
        DicomFolderSource(dicom_set.root),
        dimse_source(pacs),
        DicomWebSource(pacs.dicomweb_url, page_size=3),  # 4 studies: QIDO-RS takes 2 pages
    ]
    listed: dict[str, list[StudyRecord]] = {}
    for source in sources:
        studies, skipped = studies_of(source)
        assert skipped == [], source.name
        listed[source.name] = [s for s in studies if s.study_uid in ours]

    assert summary(listed["folder"]) == expected_summary(dicom_set)
    assert summary(listed["dimse"]) == summary(listed["folder"])
    assert summary(listed["dicomweb"]) == summary(listed["folder"])
    # Beyond the summary, Orthanc returns every attribute the records hold, Manufacturer
    # included, so the records are equal field for field.
    assert listed["dimse"] == listed["folder"]
    assert listed["dicomweb"] == listed["folder"]


def test_dimse_listing_never_drops_a_match(pacs, dicom_set: DicomSet):
    """Listed again and again, a PACS gives every series every time. pynetdicom's reactor
    could take the first C-FIND answer off the queue and drop it (see `_pause_reactor`):
    one listing in about fifteen lost a series, and the demo's index an instance."""
    ours = set(dicom_set.studies)
    expected = summary([s for s in studies_of(DicomFolderSource(dicom_set.root))[0]
                        if s.study_uid in ours])
    source = dimse_source(pacs)
    for _ in range(40):
        studies, skipped = studies_of(source)
        assert skipped == []
        assert summary([s for s in studies if s.study_uid in ours]) == expected


def _check_retrieved(files: list[Path], dicom_set: DicomSet, study_uid: str) -> None:
    originals = {pydicom.dcmread(f).SOPInstanceUID: f for f in dicom_set.files}
    assert {f.name for f in files} == {f"{sop}.dcm" for sop in dicom_set.sops(study_uid)}
    for path in files:
        got = pydicom.dcmread(path)  # a valid Part-10 file: preamble and file meta
        want = pydicom.dcmread(originals[got.SOPInstanceUID])
        assert got.file_meta.MediaStorageSOPInstanceUID == got.SOPInstanceUID
        assert (got.StudyInstanceUID, got.PatientID) == (study_uid, want.PatientID)
        assert got.PixelData == want.PixelData


@pytest.mark.orthanc
@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
def test_retrieve_writes_the_study_as_part10_files(pacs, dicom_set: DicomSet, tmp_path: Path,
                                                  kind: str):
    source = dimse_source(pacs) if kind == "dimse" else DicomWebSource(pacs.dicomweb_url)
    # The studies with several modalities, hence several SOP classes to negotiate.
    mixed = [uid_ for uid_, s in dicom_set.studies.items()
             if len({se["modality"] for se in s["series"].values()}) > 1]
    assert len(mixed) == 2
    for study_uid in mixed:
        files = source.retrieve(study_uid, tmp_path / study_uid)
        _check_retrieved(files, dicom_set, study_uid)
    assert source.retrieve("1.2.826.0.1.3680043.10.543.404", tmp_path / "unknown") == []


@pytest.mark.orthanc
def test_retrieve_keeps_the_stored_transfer_syntax(pacs, dicom_set: DicomSet, tmp_path: Path):
    """A compressed instance comes back as stored, not decompressed by Orthanc."""
    ds = pydicom.dcmread(dicom_set.files[0])
    ds.StudyInstanceUID = study_uid = uid("rle study")
    ds.SeriesInstanceUID = uid("rle series")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("rle instance")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    assert pacs.upload([tmp_path / "rle.dcm"]) == 1

    for source in (dimse_source(pacs), DicomWebSource(pacs.dicomweb_url)):
        [path] = source.retrieve(study_uid, tmp_path / source.name)
        got = pydicom.dcmread(path)
        assert got.file_meta.TransferSyntaxUID == RLELossless, source.name
        assert np.array_equal(got.pixel_array, ds.pixel_array)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def test_dimse_source_on_a_closed_port_raises_source_error(tmp_path: Path):
    source = DimseSource("127.0.0.1", _closed_port(), "ORTHANC", connect_timeout=2)
    with pytest.raises(SourceError, match="Connection refused") as info:
        list(source.studies())
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    with pytest.raises(SourceError):
        source.retrieve("1.2.3", tmp_path)


def test_dicomweb_source_on_a_closed_port_raises_source_error(tmp_path: Path):
    source = DicomWebSource(f"http://127.0.0.1:{_closed_port()}/dicom-web", retries=0)
    with pytest.raises(SourceError, match="QIDO-RS") as info:
        list(source.studies())
    assert info.value.__cause__ is not None
    with pytest.raises(SourceError, match="WADO-RS"):
        source.retrieve("1.2.3", tmp_path)


def test_dimse_association_rejected_or_aborted_raises_source_error():
    """A pynetdicom SCP that only talks to "GOOD-NODE" and aborts every C-FIND."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    def abort(event):
        event.assoc.abort()
        yield from ()

    ae = AE(ae_title="PICKY")
    ae.require_calling_aet = ["GOOD-NODE"]
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, abort)])
    try:
        port = server.server_address[1]
        with pytest.raises(SourceError, match="rejected") as info:
            list(DimseSource("127.0.0.1", port, "PICKY", calling_aet="BAD-NODE").studies())
        assert "Calling AE title not recognised" in str(info.value.__cause__)
        with pytest.raises(SourceError, match="aborted") as info:
            list(DimseSource("127.0.0.1", port, "PICKY", calling_aet="GOOD-NODE",
                             timeout=5).studies())
        assert info.value.__cause__ is not None
    finally:
        server.shutdown()


# ---------------------------------------------------------------------------- FHIR


def _patient(pid: str, **extra: object) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female",
            "birthDate": "1970-05-01", **extra}


def test_ndjson_source_skips_bad_lines_with_reasons_and_keeps_the_good(tmp_path: Path):
    folder = tmp_path / "fhir"
    folder.mkdir()
    observation = {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 81.5},
    }
    lines = [
        json.dumps(_patient("p1")),
        '{"resourceType": "Patient", "id": "p2", ',  # cut short
        json.dumps(_patient("p3", gender=42)),
        "",  # blank lines are not items
        json.dumps(_patient("p4")),
        json.dumps({"resourceType": "NotAThing", "id": "x"}),
        json.dumps(["a", "list"]),
    ]
    (folder / "Patient.ndjson").write_text("\n".join(lines) + "\n")
    (folder / "Observation.ndjson").write_bytes(json.dumps(observation).encode() + b"\n"
                                                + b'{"id": "\xff"}\n')
    (folder / "notes.txt").write_text("not read\n")
    source = FhirNdjsonSource(folder)
    assert isinstance(source, FhirSource)
    ticks: list[int] = []

    items = list(source.resources(ticks.append))

    good = [i for i in items if isinstance(i, FhirItem)]
    skipped = {i.where: i.reason for i in items if isinstance(i, Skipped)}
    assert [(i.resource_type, i.resource["id"], i.where) for i in good] == [
        ("Observation", "o1", "Observation.ndjson:1"),
        ("Patient", "p1", "Patient.ndjson:1"),
        ("Patient", "p4", "Patient.ndjson:5"),
    ]
    assert good[1].resource == _patient("p1")
    assert skipped["Patient.ndjson:2"].startswith("bad JSON")
    assert skipped["Patient.ndjson:3"] == (
        "invalid Patient.gender: Input should be a valid string")
    assert skipped["Patient.ndjson:6"] == "unknown resource type 'NotAThing'"
    assert skipped["Patient.ndjson:7"] == "not a JSON object but list"
    assert skipped["Observation.ndjson:2"].startswith("not UTF-8")
    assert len(skipped) == 5
    assert sum(ticks) == len(items) == 8


def test_bundle_source_skips_bad_entries_and_unreadable_files(tmp_path: Path):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": _patient("p1")},
        {"fullUrl": "urn:uuid:p2", "resource": _patient("p2", birthDate="1970-13-45")},
        {"request": {"method": "DELETE", "url": "Patient/p9"}},
        {"resource": _patient("p3")},
    ]}
    (tmp_path / "a.json").write_text(json.dumps(bundle))
    (tmp_path / "b.json").write_text("{ no")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "single.json").write_text(json.dumps(_patient("p4")))
    (tmp_path / "sub" / "other.json").write_text(json.dumps({"hello": "world"}))

    items = list(FhirBundleSource(tmp_path).resources())

    assert [(type(i).__name__, i.where) for i in items] == [
        ("FhirItem", "a.json:entry[0]"),
        ("Skipped", "a.json:entry[1]"),
        ("Skipped", "a.json:entry[2]"),
        ("FhirItem", "a.json:entry[3]"),
        ("Skipped", "b.json"),
        ("Skipped", "sub/other.json"),
        ("FhirItem", "sub/single.json"),
    ]
    assert items[1].reason.startswith("invalid Patient.birthDate")
    assert items[2].reason == "entry without a resource"
    assert items[4].reason.startswith("bad JSON")


def test_fhir_sources_on_a_missing_folder_raise_source_error(tmp_path: Path):
    for source in (FhirNdjsonSource(tmp_path / "nope"), FhirBundleSource(tmp_path / "nope")):
        with pytest.raises(SourceError, match="does not exist"):
            list(source.resources())
