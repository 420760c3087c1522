"""Turn DICOM attribute values into the plain Python values of the source records.

The three DICOM sources see the same attributes in three shapes: pydicom data elements
(folder, DIMSE) and DICOM JSON (DICOMweb, PS3.18 F.2). These helpers normalise the value
representations the records use (PS3.5 6.2): DA to `date`, IS to `int`, the string VRs to
a stripped `str` or None when empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from pydicom.multival import MultiValue

from gateway.node.sources.base import SeriesRecord, StudyRecord

# The attributes the records are built from, by keyword, with their tags for DICOM JSON.
STUDY_TAGS: dict[str, str] = {
    "StudyInstanceUID": "0020000D",
    "PatientID": "00100020",
    "PatientSex": "00100040",
    "PatientBirthDate": "00100030",
    "StudyDate": "00080020",
    "AccessionNumber": "00080050",
    "StudyDescription": "00081030",
}
SERIES_TAGS: dict[str, str] = {
    "SeriesInstanceUID": "0020000E",
    "Modality": "00080060",
    "SeriesNumber": "00200011",
    "BodyPartExamined": "00180015",
    "Manufacturer": "00080070",
    "SeriesDescription": "0008103E",
    "NumberOfSeriesRelatedInstances": "00201209",
}


def first(value: Any) -> Any:
    """The first value of a multi-valued attribute, the value itself otherwise."""
    if isinstance(value, list | tuple | MultiValue):
        return value[0] if len(value) else None
    return value


def text(value: Any) -> str | None:
    """A string attribute, stripped of DICOM padding; None when absent or empty."""
    value = first(value)
    if value is None:
        return None
    s = str(value).strip(" \x00")
    return s or None


def as_int(value: Any) -> int | None:
    """An IS (or US/UL) value as an int; None when absent or not a number."""
    value = first(value)
    if value is None or value == "":
        return None
    try:
        return int(float(str(value).strip()))
    except ValueError:
        return None


def as_date(value: Any) -> date | None:
    """A DA value (YYYYMMDD, PS3.5 table 6.2-1) as a date; None when absent or malformed."""
    s = text(value)
    if s is None:
        return None
    s = s.replace("-", "").replace(".", "")  # ACR-NEMA style dates still occur
    if len(s) != 8 or not s.isdigit():
        return None
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:]))
    except ValueError:
        return None


def sex(value: Any) -> str | None:
    """PatientSex: M, F or O (PS3.3 C.7.1.1); anything else is treated as unknown."""
    s = text(value)
    return s.upper() if s and s.upper() in ("M", "F", "O") else None


def study_record(attrs: Mapping[str, Any], series: tuple[SeriesRecord, ...]) -> StudyRecord:
    """A study record from attribute values keyed by keyword (see `STUDY_TAGS`)."""
    return StudyRecord(
        study_uid=text(attrs.get("StudyInstanceUID")) or "",
        patient_id=text(attrs.get("PatientID")) or "",
        patient_sex=sex(attrs.get("PatientSex")),
        patient_birth_date=as_date(attrs.get("PatientBirthDate")),
        study_date=as_date(attrs.get("StudyDate")),
        accession_number=text(attrs.get("AccessionNumber")),
        description=text(attrs.get("StudyDescription")),
        series=tuple(sorted(series, key=lambda s: s.series_uid)),
    )


def series_record(attrs: Mapping[str, Any], instance_count: int | None = None) -> SeriesRecord:
    """A series record from attribute values keyed by keyword (see `SERIES_TAGS`).

    `instance_count` overrides NumberOfSeriesRelatedInstances when the caller counted the
    instances itself (the folder source).
    """
    if instance_count is None:
        instance_count = as_int(attrs.get("NumberOfSeriesRelatedInstances")) or 0
    return SeriesRecord(
        series_uid=text(attrs.get("SeriesInstanceUID")) or "",
        modality=text(attrs.get("Modality")) or "",
        series_number=as_int(attrs.get("SeriesNumber")),
        body_part=text(attrs.get("BodyPartExamined")),
        manufacturer=text(attrs.get("Manufacturer")),
        description=text(attrs.get("SeriesDescription")),
        instance_count=instance_count,
    )


def from_dataset(ds: Any, keywords: Mapping[str, str]) -> dict[str, Any]:
    """Values of `keywords` from a pydicom Dataset (absent attributes are left out)."""
    out: dict[str, Any] = {}
    for keyword in keywords:
        elem = ds.get(keyword)
        if elem is not None:
            out[keyword] = elem
    return out


def from_json(item: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, Any]:
    """Values from a DICOM JSON object (PS3.18 F.2), keyed by keyword."""
    out: dict[str, Any] = {}
    for keyword, tag in tags.items():
        attr = item.get(tag)
        if not isinstance(attr, Mapping):
            continue
        values = attr.get("Value")
        if values:
            out[keyword] = values[0]
    return out
