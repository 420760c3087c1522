"""`spe node sync`: rebuild the node's index from its stores in one transaction.

A malformed file or line is skipped, counted and reported; the sync goes on. The rebuild
happens inside one transaction, so queries see either the old index or the new one.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.orm import Session

from gateway.node.index import repository
from gateway.node.index.models import Condition, Observation, Patient, Series, Study, SyncRun
from gateway.node.query.perturb import record_key
from gateway.node.sources.base import DicomSource, FhirSource, Skipped, StudyRecord

MAX_SKIPPED_LISTED = 50



@dataclass(frozen=True)
class SyncProgress:
    """Where a sync is: `done` of `total` `unit`s of one stage ("fhir", then "dicom") read,
    `skipped` bad files or lines so far. `total` is None where the store cannot say up front
    (DIMSE, DICOMweb); the stage's last report has `done == total`."""

    stage: str
    done: int
    total: int | None
    unit: str
    skipped: int


StageProgress = Callable[[SyncProgress], None]


@dataclass
class SyncReport:
    patients: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    conditions: int = 0
    observations: int = 0
    fhir_resources: dict[str, int] = field(default_factory=dict)
    fhir_duplicates: int = 0  # copies of one resource in several bundles, read once
    skipped: int = 0
    skipped_examples: list[dict[str, str]] = field(default_factory=list)
    studies_without_fhir_patient: int = 0
    seconds: float = 0.0

    def skip(self, item: Skipped) -> None:
        self.skipped += 1
        if len(self.skipped_examples) < MAX_SKIPPED_LISTED:
            self.skipped_examples.append({"where": item.where, "reason": item.reason})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _PatientRow:
    id: int
    patient_key: str
    fhir_id: str | None
    sex: str | None
    birth_date: date | None


def sync_index(
    session: Session,
    *,
    dicom: DicomSource | None,
    fhir: FhirSource | None,
    progress: StageProgress | None = None,
    cellkey_secret: bytes | None = None,
) -> SyncReport:
    """`cellkey_secret`: the node's record-key secret (gateway/node/query/perturb.py); without
    it the patients' record keys stay NULL until the node's next answer fills them."""
    started = time.perf_counter()
    run = repository.add_sync_run(session, SyncRun(
        started_at=datetime.now(UTC),
        dicom_source=getattr(dicom, "name", "") if dicom else "",
        fhir_source=getattr(fhir, "name", "") if fhir else "",
    ))
    report = SyncReport()
    repository.clear(session)

    patients: dict[str, _PatientRow] = {}  # by patient key
    by_reference: dict[str, _PatientRow] = {}  # by FHIR id and every identifier value
    clinical: list[tuple[str, str, dict[str, Any]]] = []
    resource_counts: Counter[str] = Counter()

    def add_patient(key: str, **attrs: Any) -> _PatientRow:
        row = _PatientRow(id=len(patients) + 1, patient_key=key, **attrs)
        patients[key] = row
        return row

    if fhir is not None:
        stage = _Stage("fhir", fhir, "resources", report, progress)
        for item in fhir.resources(stage.tick if progress else None):
            if isinstance(item, Skipped):
                report.skip(item)
                continue
            resource_counts[item.resource_type] += 1
            res = item.resource
            if item.resource_type == "Patient":
                key = _patient_key(res)
                if key in patients:
                    report.skip(Skipped(item.where, f"duplicate patient key {key!r}"))
                    continue
                row = add_patient(key, fhir_id=res.get("id"), sex=res.get("gender"),
                                  birth_date=_date(res.get("birthDate")))
                for ref in _references_to(res):
                    by_reference[ref] = row
            elif item.resource_type in ("Condition", "Observation"):
                subject = ((res.get("subject") or {}).get("reference")) or ""
                clinical.append((item.resource_type, _ref_id(subject), res))
        stage.finish()

    report.fhir_duplicates = getattr(fhir, "duplicates", 0)

    studies: list[dict[str, Any]] = []
    series_rows: list[dict[str, Any]] = []
    if dicom is not None:
        stage = _Stage("dicom", dicom, "studies", report, progress)
        for item in dicom.studies(stage.tick if progress else None):
            if isinstance(item, Skipped):
                report.skip(item)
                continue
            patient = by_reference.get(item.patient_id) or patients.get(item.patient_id)
            if patient is None:
                patient = add_patient(item.patient_id, fhir_id=None, sex=_dicom_sex(item),
                                      birth_date=item.patient_birth_date)
                by_reference[item.patient_id] = patient
            if patient.fhir_id is None:
                report.studies_without_fhir_patient += 1
            study_id = len(studies) + 1
            studies.append(_study_row(study_id, patient.id, item))
            for s in item.series:
                series_rows.append({
                    "id": len(series_rows) + 1, "series_uid": s.series_uid, "study_id": study_id,
                    "modality": s.modality, "body_part": s.body_part,
                    "manufacturer": s.manufacturer, "series_number": s.series_number,
                    "instance_count": s.instance_count,
                })
        stage.finish()

    repository.bulk_insert(session, Patient, (
        {"id": p.id, "patient_key": p.patient_key, "fhir_id": p.fhir_id, "sex": p.sex,
         "birth_date": p.birth_date,
         "record_key": None if cellkey_secret is None
         else record_key(cellkey_secret, p.patient_key)} for p in patients.values()
    ))
    repository.bulk_insert(session, Study, studies)
    repository.refresh_ages(session)
    repository.bulk_insert(session, Series, series_rows)
    conditions, observations = _clinical_rows(clinical, by_reference, report)
    repository.bulk_insert(session, Condition, conditions)
    repository.bulk_insert(session, Observation, observations)

    report.patients = len(patients)
    report.studies = len(studies)
    report.series = len(series_rows)
    report.instances = sum(r["instance_count"] for r in series_rows)
    report.conditions = len({r["fhir_id"] for r in conditions})
    report.observations = len(observations)
    report.fhir_resources = dict(sorted(resource_counts.items()))
    report.seconds = round(time.perf_counter() - started, 3)
    run.finished_at = datetime.now(UTC)
    run.report = json.dumps(report.to_dict())
    session.flush()
    return report


class _Stage:
    """One stage's progress: the source's ticks summed, its size asked up front where the
    source can tell (`count()`, in `progress_unit`s), and a last report with done == total."""

    def __init__(self, name: str, source: Any, unit: str, report: SyncReport,
                 progress: StageProgress | None) -> None:
        self.name, self.report, self.progress, self.done = name, report, progress, 0
        self.unit = getattr(source, "progress_unit", unit)
        count = getattr(source, "count", None)
        self.total = count() if progress and callable(count) else None
        self._emit()

    def _emit(self, final: bool = False) -> None:
        if self.progress is None:
            return
        total = self.done if final else (
            None if self.total is None else max(self.total, self.done))
        self.progress(SyncProgress(self.name, self.done, total, self.unit,
                                   self.report.skipped))

    def tick(self, n: int) -> None:
        self.done += n
        self._emit()

    def finish(self) -> None:
        self._emit(final=True)


def _study_row(study_id: int, patient_id: int, item: StudyRecord) -> dict[str, Any]:
    modalities = sorted({s.modality for s in item.series if s.modality})
    return {
        "id": study_id, "study_uid": item.study_uid, "patient_id": patient_id,
        "study_date": item.study_date, "modalities": "\\".join(modalities),
        "series_count": len(item.series),
        "instance_count": sum(s.instance_count for s in item.series),
    }


def _clinical_rows(
    clinical: list[tuple[str, str, dict[str, Any]]],
    by_reference: dict[str, _PatientRow],
    report: SyncReport,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    conditions: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    for kind, subject, res in clinical:
        patient = by_reference.get(subject)
        if patient is None:
            report.skip(Skipped(f"{kind}/{res.get('id')}", f"subject {subject!r} not found"))
            continue
        codings = [c for c in (res.get("code") or {}).get("coding", []) if c.get("code")]
        if kind == "Condition":
            onset = _date(res.get("onsetDateTime") or res.get("recordedDate"))
            for c in codings:
                conditions.append({
                    "id": len(conditions) + 1, "patient_id": patient.id,
                    "fhir_id": res.get("id"), "system": c.get("system") or "",
                    "code": c["code"], "display": _display(c), "onset_date": onset,
                })
        else:
            quantity = res.get("valueQuantity") or {}
            for c in codings[:1]:  # the primary coding names what was measured
                observations.append({
                    "id": len(observations) + 1, "patient_id": patient.id,
                    "fhir_id": res.get("id"), "system": c.get("system") or "",
                    "code": c["code"], "display": _display(c), "value": quantity.get("value"),
                    "unit": quantity.get("code") or quantity.get("unit"),
                    "effective_date": _date(res.get("effectiveDateTime")),
                })
    return conditions, observations


def _display(coding: dict[str, Any]) -> str | None:
    """A coding's display, trimmed to the index's column (None when there is none)."""
    display = coding.get("display")
    if not isinstance(display, str) or not display.strip():
        return None
    return " ".join(display.split())[:255]


def _patient_key(patient: dict[str, Any]) -> str:
    """The medical record number: the identifier typed MR, or one whose system says mrn."""
    identifiers = patient.get("identifier") or []
    for ident in identifiers:
        codings = ((ident.get("type") or {}).get("coding")) or []
        if any(c.get("code") == "MR" for c in codings) and ident.get("value"):
            return str(ident["value"])
    for ident in identifiers:
        if "mrn" in (ident.get("system") or "").lower() and ident.get("value"):
            return str(ident["value"])
    return str(patient.get("id"))


def _references_to(patient: dict[str, Any]) -> list[str]:
    refs = [str(patient["id"])] if patient.get("id") else []
    refs += [str(i["value"]) for i in patient.get("identifier") or [] if i.get("value")]
    return refs


def _ref_id(reference: str) -> str:
    # "Patient/123" from servers and NDJSON, "urn:uuid:..." inside Synthea's bundles.
    if reference.startswith("urn:uuid:"):
        return reference.removeprefix("urn:uuid:")
    return reference.rpartition("/")[2]


def _date(value: Any) -> date | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value)
    try:
        if len(text) == 4:
            return date(int(text), 1, 1)
        if len(text) == 7:
            return date(int(text[:4]), int(text[5:7]), 1)
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _dicom_sex(item: StudyRecord) -> str | None:
    return {"M": "male", "F": "female", "O": "other"}.get(item.patient_sex or "")
