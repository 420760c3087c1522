"""What a node needs from a data store: small protocols with one implementation per store.

The sync reads every source through these protocols only, so the index it builds does not
depend on whether the images came from a folder, Orthanc over DIMSE or Orthanc over DICOMweb.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class SourceError(Exception):
    """A store could not be read (connection refused, association rejected, bad folder)."""


@dataclass(frozen=True)
class SeriesRecord:
    series_uid: str
    modality: str
    series_number: int | None = None
    body_part: str | None = None
    manufacturer: str | None = None
    description: str | None = None
    instance_count: int = 0


@dataclass(frozen=True)
class StudyRecord:
    study_uid: str
    patient_id: str
    patient_sex: str | None = None
    patient_birth_date: date | None = None
    study_date: date | None = None
    accession_number: str | None = None
    description: str | None = None
    series: tuple[SeriesRecord, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """A file or line a source could not use; the sync counts and reports it, then goes on."""

    where: str
    reason: str


@dataclass
class FhirItem:
    """One parsed FHIR resource (validated with fhir.resources) as a plain dict."""

    resource_type: str
    resource: dict[str, Any] = field(repr=False)
    where: str = ""


Progress = Callable[[int], None]
"""Called with the number of items just processed, so long reads can show progress. A
source that knows its size up front also has `count()` (the items its read will tick, in
its `progress_unit`: files, resources, studies), so the sync can say `done/total`."""


@runtime_checkable
class DicomSource(Protocol):
    """A store of DICOM studies."""

    name: str

    def studies(self, progress: Progress | None = None) -> Iterator[StudyRecord | Skipped]:
        """Every study with its series, read at header level only."""
        ...

    def retrieve(self, study_uid: str, dest: Path) -> list[Path]:
        """Copy one study's instances into `dest`; return the files written."""
        ...


@runtime_checkable
class FhirSource(Protocol):
    """A store of FHIR R4 resources."""

    name: str

    def resources(self, progress: Progress | None = None) -> Iterator[FhirItem | Skipped]:
        """Every resource, validated; malformed input comes back as `Skipped`."""
        ...
