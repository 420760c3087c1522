"""What of the extract must not appear in an output: ids, pseudonyms, UIDs, accession
numbers and exact dates, read from the extract the job ran over.

`terms_from_extract(folder)` reads FHIR NDJSON (every resource id and identifier value;
Patient ids and identifiers as patient ids; ImagingStudy accession identifiers; every UID;
every day-precise date outside `meta`) and DICOM files, recognised by their preamble, not
their name (PatientID, OtherPatientIDs, AccessionNumber, the instance's UIDs and its dates),
with pydicom's `stop_before_pixels`. Well-known UIDs of the standard (1.2.840.10008.*: SOP
classes, transfer syntaxes) identify nothing and are left out. Terms shorter than
`MIN_TERM_LENGTH` are dropped: a three-character id would match half of any text.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from spe.airlock.encodings import TermAutomaton

MIN_TERM_LENGTH = 6
STANDARD_UID_ROOT = "1.2.840.10008."
UID_RE = re.compile(r"(?:urn:oid:)?([0-2](?:\.(?:0|[1-9][0-9]*)){2,})")
_DAY_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DA_RE = re.compile(r"(\d{4})(\d{2})(\d{2})")

# Categories, in the order a value is reported under when it is in more than one.
PATIENT, ACCESSION, UID, RECORD = "patient id", "accession number", "UID", "record id"


@dataclass(frozen=True)
class ExtractTerms:
    """Values of the extract to look for in outputs (ids compared case-insensitively).

    Values are normalised on construction (trimmed, case-folded, `urn:oid:` dropped; too
    short ones and the standard's own UIDs left out); dates may be given as `date`, ISO
    (YYYY-MM-DD...) or DICOM DA strings and are kept when they name a day.
    """

    patient_ids: frozenset[str] = frozenset()  # Patient.id, MRNs, pseudonyms, PatientID
    uids: frozenset[str] = frozenset()
    accession_numbers: frozenset[str] = frozenset()
    record_ids: frozenset[str] = frozenset()  # other resource ids and identifier values
    dates: frozenset[date] = frozenset()
    _index: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("patient_ids", "uids", "accession_numbers", "record_ids"):
            object.__setattr__(self, name, _clean(getattr(self, name)))
        days = set()
        for value in self.dates:
            day = value if isinstance(value, date) else parse_day(str(value))
            if day is not None:
                days.add(day)
        object.__setattr__(self, "dates", frozenset(days))
        index: dict[str, str] = {}
        for category, values in ((RECORD, self.record_ids), (UID, self.uids),
                                 (ACCESSION, self.accession_numbers),
                                 (PATIENT, self.patient_ids)):
            for value in values:  # later categories win: patient ids are reported as such
                index[value] = category
        object.__setattr__(self, "_index", index)

    @classmethod
    def build(cls, *, patient_ids: Iterable[str] = (), uids: Iterable[str] = (),
              accession_numbers: Iterable[str] = (), record_ids: Iterable[str] = (),
              dates: Iterable[date | str] = ()) -> ExtractTerms:
        """Terms from any iterables (lists, generators)."""
        return cls(frozenset(patient_ids), frozenset(uids), frozenset(accession_numbers),
                   frozenset(record_ids), frozenset(dates))

    @property
    def automaton(self) -> TermAutomaton:
        """Every term in the forms of `encodings.forms`, built on first use."""
        built = self.__dict__.get("_automaton")
        if built is None:
            built = TermAutomaton(self._index.items())
            object.__setattr__(self, "_automaton", built)
        return built

    def lookup(self, candidate: str) -> str | None:
        """The category of `candidate` if it is one of the extract's ids, else None."""
        return self._index.get(_norm(candidate))

    def __len__(self) -> int:
        return len(self._index) + len(self.dates)


def _norm(value: str) -> str:
    text = value.strip().casefold()
    return text[len("urn:oid:"):] if text.startswith("urn:oid:") else text


def _clean(values: Iterable[str]) -> frozenset[str]:
    out = set()
    for value in values:
        if isinstance(value, str):
            text = _norm(value)
            if len(text) >= MIN_TERM_LENGTH and not text.startswith(STANDARD_UID_ROOT):
                out.add(text)
    return frozenset(out)


def parse_day(value: str) -> date | None:
    """The day of an ISO date/dateTime or a DICOM DA/DT, if it has day precision."""
    text = value.strip()
    match = _DAY_RE.match(text) or (_DA_RE.match(text) if text[:8].isdigit() else None)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


class _Collector:
    def __init__(self) -> None:
        self.patient_ids: set[str] = set()
        self.uids: set[str] = set()
        self.accession: set[str] = set()
        self.records: set[str] = set()
        self.dates: set[date] = set()

    def terms(self) -> ExtractTerms:
        return ExtractTerms.build(patient_ids=self.patient_ids, uids=self.uids,
                                  accession_numbers=self.accession, record_ids=self.records,
                                  dates=self.dates)

    # FHIR ---------------------------------------------------------------------------------
    def resource(self, resource: dict[str, Any]) -> None:
        kind = resource.get("resourceType")
        rid = resource.get("id")
        if isinstance(rid, str):
            (self.patient_ids if kind == "Patient" else self.records).add(rid)
        for ident in resource.get("identifier") or []:
            if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
                continue
            value = ident["value"]
            codes = {c.get("code") for c in (ident.get("type") or {}).get("coding") or []
                     if isinstance(c, dict)}
            system = str(ident.get("system", ""))
            if kind == "Patient":
                self.patient_ids.add(value)
            elif "ACSN" in codes or "accession" in system.casefold():
                self.accession.add(value)
            elif UID_RE.fullmatch(value):
                self.uids.add(value)
            else:
                self.records.add(value)
        self._walk(resource)

    def _walk(self, node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k not in {"meta", "identifier"}:  # meta: when the file was written
                    self._walk(v, k)
        elif isinstance(node, list):
            for item in node:
                self._walk(item, key)
        elif isinstance(node, str):
            if UID_RE.fullmatch(node):
                self.uids.add(node)
            elif _DAY_RE.match(node) and (day := parse_day(node)) is not None:
                self.dates.add(day)

    # DICOM --------------------------------------------------------------------------------
    _DICOM_IDS = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID")
    _DICOM_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                   "FrameOfReferenceUID")
    _DICOM_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
                    "PatientBirthDate", "InstanceCreationDate")

    def dicom(self, path: Path) -> None:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
                *self._DICOM_IDS, "AccessionNumber", *self._DICOM_UIDS, *self._DICOM_DATES])
        except (InvalidDicomError, OSError, ValueError):
            return
        for name in self._DICOM_IDS[:2]:
            for value in _values(ds.get(name)):
                self.patient_ids.add(value)
        for value in _values(ds.get("AccessionNumber")):
            self.accession.add(value)
        for name in self._DICOM_UIDS:
            for value in _values(ds.get(name)):
                self.uids.add(value)
        for name in self._DICOM_DATES:
            for value in _values(ds.get(name)):
                if (day := parse_day(value)) is not None:
                    self.dates.add(day)


def _values(element: Any) -> Iterator[str]:
    if element is None:
        return
    value = element.value if hasattr(element, "value") else element
    items = value if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" \
        else [value]
    for item in items:
        if item is not None and str(item).strip():
            yield str(item).strip()


def is_dicom_file(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def terms_from_extract(extract_dir: Path) -> ExtractTerms:
    """The terms of every FHIR NDJSON and DICOM file under `extract_dir`."""
    collector = _Collector()
    for root, _dirs, files in os.walk(extract_dir):
        for name in files:
            path = Path(root, name)
            if path.is_symlink():
                continue
            if name.endswith(".ndjson"):
                _read_ndjson(path, collector)
            elif is_dicom_file(path):
                collector.dicom(path)
    return collector.terms()


@functools.lru_cache(maxsize=16)
def _terms_at(path: str, mtime_ns: int) -> ExtractTerms:
    return terms_from_extract(Path(path))


def cached_terms(extract_dir: Path) -> ExtractTerms:
    """`terms_from_extract`, read once per extract folder and version (its mtime): every
    job over a staged extract scans its outputs for the same terms."""
    return _terms_at(str(Path(extract_dir).resolve()), os.stat(extract_dir).st_mtime_ns)


def _read_ndjson(path: Path, collector: _Collector) -> None:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                resource = json.loads(line)
            except ValueError:
                continue
            if isinstance(resource, dict):
                collector.resource(resource)
