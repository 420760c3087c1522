"""An extract's quasi-identifiers, read from FHIR Bulk Data NDJSON (as `spe synth` writes it)
and from DICOM headers.

`load_fhir_extract(folder)` gives one record per patient, the shape `spe.anonymize.risk` measures:

    {"id": "<Patient.id>", "age": 67, "sex": "female", "region": "ES:28029",
     "codes": ("C71.9", "I10")}

- age: whole years at the patient's first ImagingStudy.started. A patient without a study is
  aged at their latest Condition date (recordedDate, else onset); one with neither at the
  extract's reference date, the latest study or condition date in the whole extract, so the
  result depends on the files only, never on today's date. Without a birthDate, the age
  band of an extract already generalised (`AGE_BAND_URL`, e.g. "40-59"), else None.
- sex: Patient.gender as written (None if absent).
- region: "<country>:<postal code>" from Patient.address[0]; "<country>" alone without a
  postal code, ":<postal code>" without a country, None without either. One string keeps the
  country beside the code so the region hierarchy can generalise down to the country.
- codes: the patient's ICD-10 codes (system http://hl7.org/fhir/sid/icd-10), sorted and
  unique. SNOMED CT codings are left out: the rare-code hierarchy climbs ICD-10 categories.

`load_dicom_extract(folder)` gives the same records for the patients of a DICOM tree, keyed
by PatientID, from what the headers still say: age from PatientAge (else PatientBirthDate at
the earliest StudyDate), sex from PatientSex (M/F/O as FHIR's male/female/other), no region
and no codes (neither survives the PS3.15 basic profile). A staged extract keeps age and sex
only under the Retain Patient Characteristics option, so by default every DICOM patient
falls in one class.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

ICD10 = "http://hl7.org/fhir/sid/icd-10"
#: Where spe.anonymize.risk_apply writes a generalised age (kept here: it imports this).
AGE_BAND_URL = "urn:spe:fhir:extension:age-band-at-first-study"


class ExtractError(Exception):
    """The folder is not a readable FHIR NDJSON extract."""


def fhir_folder(folder: Path) -> Path:
    """The folder holding Patient.ndjson: `folder` itself or, for a site folder, `folder/fhir`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExtractError(f"{folder} is not a folder")
    for candidate in (folder, folder / "fhir"):
        if (candidate / "Patient.ndjson").is_file():
            return candidate
    raise ExtractError(f"no Patient.ndjson in {folder} (nor in {folder / 'fhir'})")


def read_ndjson(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                resource = json.loads(line)
            except ValueError as exc:
                raise ExtractError(f"{path.name} line {number}: not JSON ({exc})") from None
            if isinstance(resource, dict):
                yield resource


def load_fhir_extract(folder: Path) -> list[dict[str, Any]]:
    """One quasi-identifier record per patient, in Patient.ndjson order."""
    base = fhir_folder(folder)
    patients = list(read_ndjson(base / "Patient.ndjson"))
    first_study: dict[str, date] = {}
    last_condition: dict[str, date] = {}
    codes: dict[str, set[str]] = {}
    for study in read_ndjson(base / "ImagingStudy.ndjson"):
        pid, when = _subject(study), _date(study.get("started"))
        if pid and when and (pid not in first_study or when < first_study[pid]):
            first_study[pid] = when
    for condition in read_ndjson(base / "Condition.ndjson"):
        pid = _subject(condition)
        if not pid:
            continue
        when = _date(condition.get("recordedDate")) or _date(condition.get("onsetDateTime"))
        if when and (pid not in last_condition or when > last_condition[pid]):
            last_condition[pid] = when
        for coding in (condition.get("code") or {}).get("coding") or []:
            if coding.get("system") == ICD10 and coding.get("code"):
                codes.setdefault(pid, set()).add(coding["code"])
    known = list(first_study.values()) + list(last_condition.values())
    reference = max(known) if known else None
    records = []
    for patient in patients:
        pid = patient.get("id")
        when = first_study.get(pid) or last_condition.get(pid) or reference
        age = _age(_date(patient.get("birthDate")), when)
        records.append({
            "id": pid,
            "age": _age_band(patient) if age is None else age,
            "sex": patient.get("gender"),
            "region": _region(patient),
            "codes": tuple(sorted(codes.get(pid, ()))),
        })
    return records


def _subject(resource: dict[str, Any]) -> str | None:
    ref = (resource.get("subject") or {}).get("reference") or ""
    return ref.removeprefix("Patient/") or None


def _date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _age(birth: date | None, when: date | None) -> int | None:
    if birth is None or when is None or when < birth:
        return None
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


def _age_band(patient: dict[str, Any]) -> str | None:
    """The band an extract generalised by layer 3 gives instead of a birth date
    (spe.anonymize.risk_apply), measured as it stands."""
    for extension in patient.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == AGE_BAND_URL:
            return extension.get("valueString") or None
    return None


def _region(patient: dict[str, Any]) -> str | None:
    addresses = patient.get("address") or [{}]
    address = addresses[0] if isinstance(addresses[0], dict) else {}
    country, postal = address.get("country") or "", address.get("postalCode") or ""
    if not country and not postal:
        return None
    return f"{country}:{postal}" if postal else country


DICOM_SEX = {"M": "male", "F": "female", "O": "other"}
_AGE_UNITS = {"Y": 1, "M": 12, "W": 52, "D": 365}


def load_dicom_extract(folder: Path, skip_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One quasi-identifier record per PatientID in the DICOM files under `folder`, sorted
    by PatientID; patients in `skip_ids` (already measured from FHIR) are left out. A file
    pydicom cannot read is skipped: staging only writes files it could read."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    skip = set(skip_ids)
    tags = ["PatientID", "PatientAge", "PatientBirthDate", "PatientSex", "StudyDate"]
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        pid = str(ds.get("PatientID") or "")
        if not pid or pid in skip:
            continue
        entry = seen.setdefault(pid, {"ages": [], "births": set(), "studies": [],
                                      "sexes": set()})
        age = _dicom_age(str(ds.get("PatientAge") or ""))
        if age is not None:
            entry["ages"].append(age)
        if birth := _da(ds.get("PatientBirthDate")):
            entry["births"].add(birth)
        if study := _da(ds.get("StudyDate")):
            entry["studies"].append(study)
        if sex := DICOM_SEX.get(str(ds.get("PatientSex") or "").strip().upper()):
            entry["sexes"].add(sex)
    records = []
    for pid in sorted(seen):
        entry = seen[pid]
        age = min(entry["ages"]) if entry["ages"] else None
        if age is None and len(entry["births"]) == 1 and entry["studies"]:
            age = _age(next(iter(entry["births"])), min(entry["studies"]))
        # Headers that disagree say no one thing; the sex is then not a usable identifier.
        sex = next(iter(entry["sexes"])) if len(entry["sexes"]) == 1 else None
        records.append({"id": pid, "age": age, "sex": sex, "region": None, "codes": ()})
    return records


def _dicom_age(value: str) -> int | None:
    """Whole years from an AS value ("067Y", "018M", "003W", "010D")."""
    match = re.fullmatch(r"(\d{3})([YMWD])", value.strip())
    if not match:
        return None
    return int(match.group(1)) // _AGE_UNITS[match.group(2)]


def _da(value: Any) -> date | None:
    from pydicom.valuerep import DA

    try:
        day = DA(str(value or "").strip())
    except ValueError:  # not a DA of day precision
        return None
    return date(day.year, day.month, day.day) if day is not None else None


def identifier_values(patient: dict[str, Any]) -> set[str]:
    """A Patient's identifier values: what its DICOM files carry as PatientID."""
    return {str(i["value"]) for i in patient.get("identifier") or []
            if isinstance(i, dict) and i.get("value")}
