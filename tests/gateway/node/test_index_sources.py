"""The node's index is the same whichever store the same DICOM files are read from.

The test set of `dicom_set.py` is synced with `run_sync` three times, into three SQLite node
databases: from the folder, from a real Orthanc over DIMSE and from the same Orthanc over
DICOMweb. The three indexes must hold the same patients, studies and series with the same
attributes and instance counts, and those must be what the files say, as read here with
pydicom independently of the sources' own header parsing. One patient's IDs and texts are
outside Latin-1 (UTF-8 files): Orthanc must be configured to answer C-FIND and QIDO-RS in
UTF-8 (`DefaultEncoding`), else it drops those characters and the indexes differ.

The Orthanc here is the module's own rather than the session's: the session Orthanc also
holds the other tests' uploads, which a sync would index too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import select

from gateway.node.index import repository
from gateway.node.index.models import Patient, Series, Study
from gateway.node.orthanc_process import OrthancProcess
from gateway.node.service import run_sync
from gateway.node.sync import SyncReport
from spe.db import make_engine, make_sessionmaker, session_scope
from tests.gateway.node.dicom_set import DicomSet
from tests.orthanc import orthanc_server

SOURCES = ["folder", "dimse", "dicomweb"]
ORTHANC_SOURCES = [s for s in SOURCES if s != "folder"]


@dataclass(frozen=True)
class IndexContent:
    """What a node index holds, by natural keys (not the surrogate row ids)."""

    study_series: list[tuple[str, str, str, int]]
    counts: dict[str, int]
    patients: list[tuple[Any, ...]]  # (key, fhir id, sex, birth date)
    studies: list[tuple[Any, ...]]  # (uid, patient key, date, modalities, #series, #instances)
    series: list[tuple[Any, ...]]  # (uid, study uid, modality, body part, manufacturer,
    #                                 series number, #instances)


def read_index(database_url: str) -> IndexContent:
    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            patients = session.execute(
                select(Patient.patient_key, Patient.fhir_id, Patient.sex, Patient.birth_date)
                .order_by(Patient.patient_key)).all()
            studies = session.execute(
                select(Study.study_uid, Patient.patient_key, Study.study_date, Study.modalities,
                       Study.series_count, Study.instance_count)
                .join(Study.patient).order_by(Study.study_uid)).all()
            series = session.execute(
                select(Series.series_uid, Study.study_uid, Series.modality, Series.body_part,
                       Series.manufacturer, Series.series_number, Series.instance_count)
                .join(Series.study).order_by(Series.series_uid)).all()
            return IndexContent(
                study_series=repository.study_series(session),
                counts=repository.counts(session),
                patients=[tuple(r) for r in patients],
                studies=[tuple(r) for r in studies],
                series=[tuple(r) for r in series],
            )
    finally:
        engine.dispose()


def _da(value: str) -> date | None:
    return datetime.strptime(value, "%Y%m%d").date() if value else None


def content_of_files(files: list[Path]) -> IndexContent:
    """The index the files call for, from their headers read with pydicom."""
    sexes = {"M": "male", "F": "female", "O": "other"}
    patients: dict[str, tuple[Any, ...]] = {}
    study_attrs: dict[str, tuple[str, date | None]] = {}
    series_attrs: dict[str, tuple[Any, ...]] = {}
    sops: dict[str, set[str]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        pid = str(ds.PatientID)
        patients[pid] = (pid, None, sexes.get(ds.get("PatientSex", "")),
                         _da(ds.get("PatientBirthDate", "")))
        study_attrs[ds.StudyInstanceUID] = (pid, _da(ds.get("StudyDate", "")))
        series_attrs[ds.SeriesInstanceUID] = (
            ds.StudyInstanceUID, ds.Modality, ds.get("BodyPartExamined") or None,
            ds.get("Manufacturer") or None,
            int(ds.SeriesNumber) if ds.get("SeriesNumber") is not None else None)
        sops.setdefault(ds.SeriesInstanceUID, set()).add(ds.SOPInstanceUID)

    series = [(uid, *attrs, len(sops[uid])) for uid, attrs in sorted(series_attrs.items())]
    studies = []
    for uid, (pid, study_date) in sorted(study_attrs.items()):
        own = [s for s in series if s[1] == uid]
        studies.append((uid, pid, study_date, "\\".join(sorted({s[2] for s in own})),
                        len(own), sum(s[-1] for s in own)))
    return IndexContent(
        study_series=sorted((s[1], s[0], s[2], s[-1]) for s in series),
        counts={"patients": len(patients), "studies": len(studies), "series": len(series),
                "conditions": 0, "condition_codings": 0, "observations": 0,
                "instances": sum(len(v) for v in sops.values())},
        patients=sorted(patients.values()),
        studies=studies,
        series=series,
    )


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pacs_alone(tmp_path_factory: pytest.TempPathFactory,
               dicom_set: DicomSet) -> Iterator[OrthancProcess]:
    """An Orthanc of this module's own, holding the test set and nothing else."""
    with orthanc_server(tmp_path_factory.mktemp("orthanc-index")) as server:
        assert server.upload(dicom_set.files) == len(dicom_set.files)
        assert server.instance_count() == len(dicom_set.files)
        yield server


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the node databases go, with an empty FHIR NDJSON folder beside them."""
    where = tmp_path_factory.mktemp("node-index")
    (where / "fhir").mkdir()
    return where


def _sync(node_dir: Path, kind: str, dicom: str) -> tuple[SyncReport, IndexContent]:
    url = f"sqlite:///{node_dir / f'{kind}.db'}"
    report = run_sync(url, dicom=dicom, fhir=f"ndjson:{node_dir / 'fhir'}",
                      actor="test-index-sources")
    return report, read_index(url)


@pytest.fixture(scope="module")
def folder_index(node_dir: Path, dicom_set: DicomSet) -> tuple[SyncReport, IndexContent]:
    return _sync(node_dir, "folder", f"folder:{dicom_set.root}")


@pytest.fixture(scope="module")
def dimse_index(node_dir: Path, pacs_alone: OrthancProcess) -> tuple[SyncReport, IndexContent]:
    return _sync(node_dir, "dimse",
                 f"dimse://{pacs_alone.aet}@127.0.0.1:{pacs_alone.dicom_port}")


@pytest.fixture(scope="module")
def dicomweb_index(node_dir: Path,
                   pacs_alone: OrthancProcess) -> tuple[SyncReport, IndexContent]:
    return _sync(node_dir, "dicomweb", f"dicomweb:{pacs_alone.dicomweb_url}")


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", [
    "folder",
    *(pytest.param(kind, marks=pytest.mark.orthanc) for kind in ORTHANC_SOURCES),
])
def test_index_from_each_source_is_what_the_files_hold(request: pytest.FixtureRequest,
                                                       dicom_set: DicomSet, kind: str):
    report, index = request.getfixturevalue(f"{kind}_index")
    want = content_of_files(dicom_set.files)
    # The test set itself: 4 patients, 5 studies, 11 series, 21 instances.
    assert [want.counts[k] for k in ("patients", "studies", "series", "instances")] == [
        4, 5, 11, 21]

    assert index.study_series == want.study_series
    assert index.counts == want.counts
    assert index.series == want.series
    assert index.studies == want.studies
    assert index.patients == want.patients
    assert (report.skipped, report.skipped_examples) == (0, [])
    assert (report.patients, report.studies, report.series, report.instances) == (
        4, 5, 11, 21)


@pytest.mark.orthanc
def test_indexes_from_folder_dimse_and_dicomweb_are_equal(
        folder_index: tuple[SyncReport, IndexContent],
        dimse_index: tuple[SyncReport, IndexContent],
        dicomweb_index: tuple[SyncReport, IndexContent]):
    indexes = {"folder": folder_index[1], "dimse": dimse_index[1],
               "dicomweb": dicomweb_index[1]}
    for kind in ORTHANC_SOURCES:
        assert indexes[kind].study_series == indexes["folder"].study_series, kind
        assert indexes[kind].counts == indexes["folder"].counts, kind
        assert indexes[kind] == indexes["folder"], kind
