"""One patient's synthetic record, decided before anything is written.

Both writers (FHIR and DICOM) read these records, which is what keeps the two in step:
the ImagingStudy and the DICOM files of a study are two views of the same StudyRecord.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from spe.synth.codes import Code, ConditionDef, ObservationDef
from spe.synth.exams import ExamDef
from spe.synth.people import Person
from spe.synth.scanners import Device


@dataclass
class ConditionRecord:
    id: str
    definition: ConditionDef
    onset: date
    recorded: date


@dataclass
class ObservationRecord:
    id: str
    definition: ObservationDef
    value: float
    moment: datetime


@dataclass
class ProcedureRecord:
    id: str
    code: Code
    moment: datetime
    category: Code | None
    body_site: Code | None
    reason: ConditionRecord | None


@dataclass
class SeriesRecord:
    uid: str
    number: int
    modality: str
    description: str
    instances: int
    moment: datetime
    extra: dict[str, str]
    burned_in: bool


@dataclass
class StudyRecord:
    id: str
    uid: str
    frame_uid: str
    accession: str
    study_id: str
    requested_procedure_id: str
    scheduled_step_id: str
    moment: datetime
    exam: ExamDef
    device: Device
    reason: ConditionRecord | None
    procedure: ProcedureRecord
    referring: str
    performing: str
    reading: str
    operator: str
    weight_kg: float
    previous_uid: str | None
    series: list[SeriesRecord] = field(default_factory=list)

    @property
    def modalities(self) -> list[str]:
        """Modalities in the order their first series appears."""
        return list(dict.fromkeys(s.modality for s in self.series))

    @property
    def instance_count(self) -> int:
        return sum(s.instances for s in self.series)


@dataclass
class PatientRecord:
    index: int
    id: str
    mrn: str
    legacy_id: str  # the id of the hospital's previous RIS, kept in DICOM Other Patient IDs
    person: Person
    conditions: list[ConditionRecord]
    observations: list[ObservationRecord]
    procedures: list[ProcedureRecord]
    studies: list[StudyRecord]
