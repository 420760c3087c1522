"""Layer 3 written into a staged extract: what `risk.reduce` decided, applied to its files.

`reduce` works on one record of quasi-identifiers per patient; this makes the FHIR NDJSON
and DICOM files say no more than the reduced records:

- a suppressed patient goes, with every FHIR resource that refers to them and every DICOM
  file of theirs (its PatientID is the pseudonym the Patient's identifier carries; a record
  that is no FHIR Patient was read from DICOM headers and its id is that PatientID);
- age generalised (level >= 1): Patient.birthDate goes, and the patient's age band at their
  first study (the measured value, e.g. "40-59") is written as an extension `AGE_BAND_URL`
  (none at `*`); DICOM PatientBirthDate and PatientAge go (DICOM has no attribute for a
  band, so a patient known only from DICOM loses the age altogether);
- sex generalised: Patient.gender and DICOM PatientSex go;
- region generalised: the address keeps the postal-code prefix or the country the level
  allows, or goes;
- rare codes generalised: a Condition whose ICD-10 code is rare keeps only its ICD-10
  category (its other codings and texts, which name the exact diagnosis, go); at `*` the
  Condition goes.

Files are rewritten next to themselves and renamed into place.

`reduce_files` is the whole of layer 3 on an extract's files, for the node's staging and for
`spe risk --reduce` alike: Datafly decides on the records (`load_records`), this writes it,
and the files are measured again; whoever still sits in a too-small class (suppression can
make a common code rare among those left) is suppressed, for up to `SUPPRESSION_ROUNDS`
rounds. The figures it gives are the files', never the plan's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from spe.anonymize.extract import (
    AGE_BAND_URL,
    ICD10,
    ExtractError,
    identifier_values,
    load_records,
)
from spe.anonymize.risk import (
    STAR,
    RiskReport,
    Step,
    icd10_category,
    k_for,
    measure,
    rare_code_set,
    reduce,
)

#: Rounds of suppression after the files are rewritten (see `reduce_files`); each only removes.
SUPPRESSION_ROUNDS = 5


@dataclass
class Applied:
    suppressed_patients: int = 0
    resources_removed: int = 0
    conditions_generalised: int = 0
    dicom_removed: int = 0
    dicom_rewritten: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class FileReduction:
    """What `reduce_files` did: Datafly's plan (`planned`, with its `before`), the steps, what
    was written, and the records measured from the files at the end (None when they could
    not be read again; `error` says why)."""

    planned: RiskReport
    steps: list[Step]
    applied: Applied
    rounds: int
    records: list[dict[str, Any]] | None
    error: str | None = None


class HeldDicom(Protocol):
    """A DICOM extract its caller still holds in memory, de-identified but not yet written
    (gateway/node/jobs/staging_once.py): layer 3 measures and changes it there, so each file
    is written once."""

    def records(self, skip_ids: set[str]) -> list[dict[str, Any]]:
        """As `load_dicom_extract` would read them from the written files."""

    def apply(self, gone: set[str], drop: list[str], applied: Applied) -> None:
        """As `_apply_dicom` would do to the written files."""


def reduce_files(fhir_dir: Path, dicom_dir: Path | None, records: list[dict[str, Any]], *,
                 k_min: int | None, max_risk: float | None, max_suppression: float,
                 weights: dict[str, float] | None = None,
                 dicom: HeldDicom | None = None) -> FileReduction:
    """Generalise and suppress `records` (read from these folders by `load_records`) until
    the threshold holds, write that into the files, and measure them again (see the module
    doc). With `dicom`, the DICOM part is measured and changed there instead of in
    `dicom_dir`."""
    k_wanted = k_for(k_min, max_risk)
    kept, planned, steps = reduce(records, k_min=k_min, max_risk=max_risk,
                                  max_suppression=max_suppression, weights=weights)
    applied = apply_reduction(fhir_dir, dicom_dir, patient_ids=[r["id"] for r in records],
                              kept=kept, levels=planned.levels,
                              rare=rare_code_set(records), dicom=dicom)
    rounds = 0
    try:
        while True:
            now = load_records(fhir_dir, dicom_dir,
                               dicom=dicom.records if dicom is not None else None)
            if measure(now).k >= k_wanted or rounds == SUPPRESSION_ROUNDS:
                return FileReduction(planned, steps, applied, rounds, now)
            rounds += 1
            left, _, _ = reduce(now, k_min=k_min, max_risk=max_risk, max_suppression=1.0)
            more = apply_reduction(fhir_dir, dicom_dir, patient_ids=[r["id"] for r in now],
                                   kept=left, levels={}, rare=set(), dicom=dicom)
            for name, value in more.to_dict().items():
                setattr(applied, name, getattr(applied, name) + value)
    except ExtractError as exc:
        return FileReduction(planned, steps, applied, rounds, None, str(exc))


def apply_reduction(fhir_dir: Path, dicom_dir: Path | None, *, patient_ids: Iterable[str],
                    kept: list[dict[str, Any]], levels: dict[str, int],
                    rare: set[str], dicom: HeldDicom | None = None) -> Applied:
    """Rewrite the staged files to `kept` (the records `reduce` returned, generalised to
    `levels`); `patient_ids` are all the measured patients, `rare` the codes reduce judged
    rare. `dicom`: see `reduce_files`."""
    applied = Applied()
    by_id = {r["id"]: r for r in kept}
    gone = {pid for pid in patient_ids if pid not in by_id}
    applied.suppressed_patients = len(gone)
    gone_identifiers: set[str] = set()
    fhir_ids: set[str] = set()

    def patient(resource: dict[str, Any]) -> dict[str, Any] | None:
        pid = resource.get("id")
        fhir_ids.add(pid)
        if pid in gone:
            gone_identifiers.update(identifier_values(resource))
            return None
        record = by_id.get(pid)
        if record is not None:
            _generalise_patient(resource, record, levels)
        return resource

    _rewrite(fhir_dir / "Patient.ndjson", patient)
    gone_identifiers |= gone - fhir_ids
    gone_fhir = sorted(gone & fhir_ids)
    refers = re.compile("|".join(re.escape(f"Patient/{pid}") + '(?=["/])' for pid in gone_fhir)) \
        if gone_fhir else None
    for path in sorted(fhir_dir.glob("*.ndjson")):
        if path.name == "Patient.ndjson":
            continue

        def other(resource: dict[str, Any], _raw: str) -> dict[str, Any] | None:
            if refers is not None and refers.search(_raw):
                applied.resources_removed += 1
                return None
            if resource.get("resourceType") == "Condition" and levels.get("codes", 0) >= 1:
                code = _rare_icd10(resource, rare)
                if code is not None:
                    if levels["codes"] >= 2:
                        applied.resources_removed += 1
                        return None
                    _keep_category(resource, code)
                    applied.conditions_generalised += 1
            return resource

        _rewrite(path, other, raw=True)
    if dicom_dir is not None and dicom_dir.is_dir() and (
            gone_identifiers or levels.get("age", 0) >= 1 or levels.get("sex", 0) >= 1):
        if dicom is not None:
            dicom.apply(gone_identifiers, dicom_drop(levels), applied)
        else:
            _apply_dicom(dicom_dir, gone_identifiers, levels, applied)
    return applied


def _generalise_patient(resource: dict[str, Any], record: dict[str, Any],
                        levels: dict[str, int]) -> None:
    if levels.get("age", 0) >= 1:
        resource.pop("birthDate", None)
        resource["extension"] = [e for e in resource.get("extension") or []
                                 if e.get("url") != AGE_BAND_URL]
        band = record.get("age")
        if band not in (None, STAR):
            resource["extension"].append({"url": AGE_BAND_URL, "valueString": str(band)})
        if not resource["extension"]:
            del resource["extension"]
    if levels.get("sex", 0) >= 1:
        resource.pop("gender", None)
    if levels.get("region", 0) >= 1:
        region = record.get("region")
        if region in (None, STAR):
            resource.pop("address", None)
        else:
            country, _, postal = str(region).partition(":")
            address: dict[str, Any] = {"use": "home"}
            if postal:
                address["postalCode"] = postal
            if country:
                address["country"] = country
            resource["address"] = [address]


def _rare_icd10(resource: dict[str, Any], rare: set[str]) -> str | None:
    for coding in (resource.get("code") or {}).get("coding") or []:
        if coding.get("system") == ICD10 and coding.get("code") in rare:
            return str(coding["code"])
    return None


def _keep_category(resource: dict[str, Any], code: str) -> None:
    resource["code"] = {"coding": [{"system": ICD10, "code": icd10_category(code)}]}


def _rewrite(path: Path, change, *, raw: bool = False) -> None:
    if not path.is_file():
        return
    tmp = path.with_name(f".{path.name}.partial")
    with path.open(encoding="utf-8") as src, tmp.open("w", encoding="utf-8") as out:
        for line in src:
            if not line.strip():
                continue
            resource = json.loads(line)
            kept = change(resource, line) if raw else change(resource)
            if kept is not None:
                out.write(json.dumps(kept, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def dicom_drop(levels: dict[str, int]) -> list[str]:
    """The DICOM attributes the generalisation `levels` take away."""
    drop = []
    if levels.get("age", 0) >= 1:
        drop += ["PatientBirthDate", "PatientAge"]
    if levels.get("sex", 0) >= 1:
        drop.append("PatientSex")
    return drop


def _apply_dicom(dicom_dir: Path, gone: set[str], levels: dict[str, int],
                 applied: Applied) -> None:
    paths = sorted(p for p in dicom_dir.rglob("*") if p.is_file())
    apply_to_files(paths, gone, dicom_drop(levels), applied)


def apply_to_files(paths: Iterable[Path], gone: set[str], drop: list[str],
                   applied: Applied) -> None:
    """Remove the files of `gone` PatientIDs and take `drop` out of the others, in place."""
    import pydicom

    for path in paths:
        ds = pydicom.dcmread(path, force=True)
        if str(ds.get("PatientID", "")) in gone:
            path.unlink()
            applied.dicom_removed += 1
            continue
        present = [name for name in drop if name in ds]
        if not present:
            continue
        for name in present:
            delattr(ds, name)
        tmp = path.with_name(f".{path.name}.partial")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        applied.dicom_rewritten += 1
