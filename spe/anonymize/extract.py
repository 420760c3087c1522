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
  birthDate may be a year ("1961", what `spe deid fhir`'s default rules leave), a month
  ("1961-04") or a day: a partial date is read as its first day (`fhir_date`), so the age is
  the one the patient reaches in the event's year (or month), the higher of the two the date
  allows, and patients born in the same year and aged in the same year share one age, as
  the node's index reads such dates too (gateway/node/sync.py). An extract with no dated
  study or condition at all is aged at its latest birth date. A date that is none of these
  is an `ExtractError`, never a patient measured as if the date were not there.
- sex: Patient.gender as written (None if absent).
- region: "<country>:<postal code>" from Patient.address[0]; "<country>" alone without a
  postal code, ":<postal code>" without a country, None without either. One string keeps the
  country beside the code so the region hierarchy can generalise down to the country.
- codes: the patient's ICD-10 codes (system http://hl7.org/fhir/sid/icd-10), sorted and
  unique. SNOMED CT codings are left out: the rare-code hierarchy climbs ICD-10 categories.

`load_dicom_extract(folder)` gives the same records for the patients of a DICOM tree, keyed
by PatientID, from what the headers still say: age from PatientAge, else PatientBirthDate
at the patient's earliest StudyDate (else the tree's latest StudyDate, else its latest birth
date), a year-only or year-month one ("1961", "196104") read as its first day like FHIR's;
sex from PatientSex (M/F/O as FHIR's male/female/other); no region and no codes (neither
survives the PS3.15 basic profile). A staged extract keeps age and sex only under the
Retain Patient Characteristics option, so by default every DICOM patient falls in one
class. A PatientBirthDate or PatientAge that is no date or age string is an `ExtractError`.

`load_records(fhir_dir, dicom_dir)` is the one reading of an extract's quasi-identifiers, for
`spe risk` and for the node's staging alike: the FHIR Patients', then one record per DICOM
PatientID that no Patient's identifier carries. `extract_folders(folder)` finds those two
folders in what `spe risk` is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

ICD10 = "http://hl7.org/fhir/sid/icd-10"
#: Where spe.anonymize.risk_apply writes a generalised age (kept here: it imports this).
AGE_BAND_URL = "urn:spe:fhir:extension:age-band-at-first-study"


#: Records of a DICOM extract's patients whose ids are not in the given set (see load_records).
DicomRecords = Callable[[set[str]], list[dict[str, Any]]]


class ExtractError(Exception):
    """The folder is not a readable extract (FHIR NDJSON, DICOM headers); the message says
    where (file and line, or file and attribute), never the value found there."""


def extract_folders(folder: Path) -> tuple[Path | None, Path | None]:
    """The FHIR and DICOM folders of what `spe risk` is given: a folder holding
    Patient.ndjson (FHIR only), or a site or staged extract holding fhir/ and/or dicom/."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExtractError(f"{folder} is not a folder")
    dicom = folder / "dicom" if (folder / "dicom").is_dir() else None
    for candidate in (folder, folder / "fhir"):
        if (candidate / "Patient.ndjson").is_file():
            return candidate, dicom
    if dicom is None:
        raise ExtractError(f"no Patient.ndjson in {folder} (nor in {folder / 'fhir'}) and no "
                           "dicom/ folder")
    return None, dicom


def load_records(fhir_dir: Path | None, dicom_dir: Path | None = None, *,
                 dicom: DicomRecords | None = None) -> list[dict[str, Any]]:
    """The measured records of an extract, the one reading `spe risk` and the node's staging
    share: the FHIR Patients' (`load_fhir_extract`, when `fhir_dir` holds Patient.ndjson),
    then one per DICOM PatientID under `dicom_dir` that no Patient's identifier carries
    (`load_dicom_extract`), whose id is that PatientID. `dicom`, when given, stands for the
    DICOM folder: it gives those records from headers its caller still holds in memory
    (staging measures what it is about to write without reading it back)."""
    records: list[dict[str, Any]] = []
    linked: set[str] = set()
    if fhir_dir is not None and (Path(fhir_dir) / "Patient.ndjson").is_file():
        records = load_fhir_extract(fhir_dir)
        linked = {value for patient in read_ndjson(Path(fhir_dir) / "Patient.ndjson")
                  for value in identifier_values(patient)}
    if dicom is not None:
        records += dicom(linked)
    elif dicom_dir is not None and Path(dicom_dir).is_dir():
        records += load_dicom_extract(dicom_dir, skip_ids=linked)
    return records


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
    for _number, resource in _numbered(path):
        yield resource


def _numbered(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
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
                yield number, resource


#: FHIR R4 `date` ("1961", "1961-04", "1961-04-12") and `dateTime` (a day with a time).
_FHIR_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T\S+)?)?)?")
#: DICOM DA (PS3.5 Table 6.2-1), also cut to a year or a month ("1961", "196104").
_DICOM_DA = re.compile(r"(\d{4})(\d{2})?(\d{2})?")


def _first_day(match: re.Match[str] | None, kind: str) -> date:
    try:
        if match is None:
            raise ValueError
        year, month, day = match.groups()
        return date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        raise ValueError(f"not a {kind} date") from None


def fhir_date(value: Any) -> date | None:
    """The first day a FHIR date or dateTime can mean ("1961" -> 1961-01-01, "1961-04" ->
    1961-04-01, "1961-04-12T08:00:00Z" -> 1961-04-12); None when absent.
    Raises ValueError for anything else."""
    if value is None or value == "":
        return None
    return _first_day(_FHIR_DATE.fullmatch(value) if isinstance(value, str) else None, "FHIR")


def dicom_date(value: Any) -> date | None:
    """The first day a DICOM DA means ("19610412"; the ACR-NEMA "1961.04.12"; cut to "1961"
    or "196104"); None when empty. Raises ValueError for anything else."""
    text = str(value or "").strip()
    if not text:
        return None
    if re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", text):
        text = text.replace(".", "")
    return _first_day(_DICOM_DA.fullmatch(text), "DICOM")


def _read_date(value: Any, where: str, field: str) -> date | None:
    try:
        return fhir_date(value)
    except ValueError:
        # The value is left out: it may be a patient's birth date.
        raise ExtractError(f"{where}: {field} is not a FHIR date (YYYY, YYYY-MM or "
                           "YYYY-MM-DD)") from None


def load_fhir_extract(folder: Path) -> list[dict[str, Any]]:
    """One quasi-identifier record per patient, in Patient.ndjson order."""
    base = fhir_folder(folder)
    patients = [(f"Patient.ndjson line {n}", p) for n, p in _numbered(base / "Patient.ndjson")]
    first_study: dict[str, date] = {}
    last_condition: dict[str, date] = {}
    codes: dict[str, set[str]] = {}
    for number, study in _numbered(base / "ImagingStudy.ndjson"):
        pid = _subject(study)
        when = _read_date(study.get("started"), f"ImagingStudy.ndjson line {number}",
                          "started")
        if pid and when and (pid not in first_study or when < first_study[pid]):
            first_study[pid] = when
    for number, condition in _numbered(base / "Condition.ndjson"):
        pid = _subject(condition)
        if not pid:
            continue
        where = f"Condition.ndjson line {number}"
        when = (_read_date(condition.get("recordedDate"), where, "recordedDate")
                or _read_date(condition.get("onsetDateTime"), where, "onsetDateTime"))
        if when and (pid not in last_condition or when > last_condition[pid]):
            last_condition[pid] = when
        for coding in (condition.get("code") or {}).get("coding") or []:
            if coding.get("system") == ICD10 and coding.get("code"):
                codes.setdefault(pid, set()).add(coding["code"])
    births = [_read_date(patient.get("birthDate"), where, "birthDate")
              for where, patient in patients]
    known = list(first_study.values()) + list(last_condition.values())
    # Without a dated event in the whole extract (all suppressed, say), patients are aged
    # at the latest birth date: the ages then only order the births, but equal births still
    # share a class and unequal ones do not, which is what the files tell.
    reference = max(known or [b for b in births if b is not None] or [None])
    records = []
    for (where, patient), birth in zip(patients, births, strict=True):
        pid = patient.get("id")
        when = first_study.get(pid) or last_condition.get(pid) or reference
        age = _age(birth, when)
        records.append({
            "id": pid,
            "age": _age_band(patient, where) if age is None else age,
            "sex": patient.get("gender"),
            "region": _region(patient),
            "codes": tuple(sorted(codes.get(pid, ()))),
        })
    return records


def _subject(resource: dict[str, Any]) -> str | None:
    ref = (resource.get("subject") or {}).get("reference") or ""
    return ref.removeprefix("Patient/") or None


def _age(birth: date | None, when: date | None) -> int | None:
    if birth is None or when is None or when < birth:
        return None
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


def _age_band(patient: dict[str, Any], where: str) -> str | None:
    """The band an extract generalised by layer 3 gives instead of a birth date
    (spe.anonymize.risk_apply), measured as it stands."""
    for extension in patient.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == AGE_BAND_URL:
            band = extension.get("valueString") or None
            if band is not None and not re.fullmatch(r"\d{1,3}-\d{1,3}", str(band)):
                raise ExtractError(f"{where}: the age band extension is not a band of years "
                                   "(as 40-59)")
            return band
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


#: The DICOM attributes the quasi-identifiers of a DICOM-only patient are read from.
DICOM_QI_TAGS = ("PatientID", "PatientAge", "PatientBirthDate", "PatientSex", "StudyDate")


def load_dicom_extract(folder: Path, skip_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One quasi-identifier record per PatientID in the DICOM files under `folder`, sorted
    by PatientID; patients in `skip_ids` (already measured from FHIR) are left out. A file
    pydicom cannot read is skipped: staging only writes files it could read. A StudyDate
    that is no date is left out, as a missing one; a PatientBirthDate or PatientAge that is
    none is an `ExtractError` naming the file (its path under `folder`) and the attribute."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)

    def headers() -> Iterator[tuple[str, Any]]:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=list(DICOM_QI_TAGS))
            except (InvalidDicomError, OSError, ValueError, EOFError):
                continue
            yield path.relative_to(folder).as_posix(), ds

    return dicom_records(headers(), skip_ids)


def dicom_qi_values(ds: Any) -> dict[str, Any]:
    """The `DICOM_QI_TAGS` a dataset holds (an attribute present but empty included), as
    `dicom_records` reads them: for a caller that measures datasets it still holds."""
    return {name: ds.get(name) for name in DICOM_QI_TAGS if name in ds}


def dicom_records(headers: Iterable[tuple[str, Any]],
                  skip_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """`load_dicom_extract` over (path under the folder, headers) pairs given in the order
    of the sorted paths; headers are a dataset or a `dicom_qi_values` dict."""
    skip = set(skip_ids)
    seen: dict[str, dict[str, Any]] = {}
    all_studies: list[date] = []
    for where, ds in headers:
        try:
            study = dicom_date(ds.get("StudyDate"))
        except ValueError:
            study = None
        if study is not None:
            all_studies.append(study)
        pid = str(ds.get("PatientID") or "")
        if not pid or pid in skip:
            continue
        entry = seen.setdefault(pid, {"ages": [], "births": set(), "studies": [],
                                      "sexes": set()})
        age = _dicom_age(str(ds.get("PatientAge") or ""), where)
        if age is not None:
            entry["ages"].append(age)
        try:
            birth = dicom_date(ds.get("PatientBirthDate"))
        except ValueError:
            raise ExtractError(f"{where}: PatientBirthDate is not a DICOM date (YYYYMMDD, or "
                               "cut to YYYY or YYYYMM)") from None
        if birth is not None:
            entry["births"].add(birth)
        if study is not None:
            entry["studies"].append(study)
        if sex := DICOM_SEX.get(str(ds.get("PatientSex") or "").strip().upper()):
            entry["sexes"].add(sex)
    births = [b for entry in seen.values() for b in entry["births"]]
    reference = max(all_studies or births or [None])  # as load_fhir_extract's
    records = []
    for pid in sorted(seen):
        entry = seen[pid]
        age = min(entry["ages"]) if entry["ages"] else None
        if age is None and len(entry["births"]) == 1:
            when = min(entry["studies"]) if entry["studies"] else reference
            age = _age(next(iter(entry["births"])), when)
        # Headers that disagree say no one thing; the sex is then not a usable identifier.
        sex = next(iter(entry["sexes"])) if len(entry["sexes"]) == 1 else None
        records.append({"id": pid, "age": age, "sex": sex, "region": None, "codes": ()})
    return records


def _dicom_age(value: str, where: str) -> int | None:
    """Whole years from an AS value ("067Y", "018M", "003W", "010D"); None when empty."""
    if not value.strip():
        return None
    match = re.fullmatch(r"(\d{3})([YMWD])", value.strip())
    if not match:
        raise ExtractError(f"{where}: PatientAge is not a DICOM age string (nnnY, nnnM, nnnW "
                           "or nnnD)")
    return int(match.group(1)) // _AGE_UNITS[match.group(2)]


def identifier_values(patient: dict[str, Any]) -> set[str]:
    """A Patient's identifier values: what its DICOM files carry as PatientID."""
    return {str(i["value"]) for i in patient.get("identifier") or []
            if isinstance(i, dict) and i.get("value")}
