"""Index tables. Direct identifiers (names, addresses) are never copied here: the index
keeps the local patient key only to link images to clinical records."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from spe.audit.models import NodeAuditEntry, NodeAuditHead  # noqa: F401  (same metadata)
from spe.db.base import NodeBase


class Patient(NodeBase):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The institution's own patient key (MRN = DICOM PatientID); never leaves the node.
    patient_key: Mapped[str] = mapped_column(String(128), unique=True)
    fhir_id: Mapped[str | None] = mapped_column(String(128), index=True)
    sex: Mapped[str | None] = mapped_column(String(16), index=True)
    birth_date: Mapped[date | None] = mapped_column(Date)
    # The cell-key method's fixed key in [0, 2^32): HMAC-SHA256(node secret, patient_key)
    # (gateway/node/query/perturb.py). Set by the sync; NULL rows get it before an answer.
    record_key: Mapped[int | None] = mapped_column(BigInteger)

    studies: Mapped[list[Study]] = relationship(back_populates="patient", lazy="raise")


class Study(NodeBase):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"),
                                            index=True)
    study_date: Mapped[date | None] = mapped_column(Date, index=True)
    # The patient's completed years on the study date, set by every sync
    # (repository.refresh_ages): an indexed column instead of date arithmetic per row.
    age_at_study: Mapped[int | None] = mapped_column(Integer, index=True)
    modalities: Mapped[str] = mapped_column(String(64), default="")
    series_count: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)

    patient: Mapped[Patient] = relationship(back_populates="studies", lazy="raise")
    series: Mapped[list[Series]] = relationship(back_populates="study", lazy="raise")


class Series(NodeBase):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"),
                                          index=True)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    body_part: Mapped[str | None] = mapped_column(String(64), index=True)
    manufacturer: Mapped[str | None] = mapped_column(String(64), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="series", lazy="raise")


class Condition(NodeBase):
    """One row per coding, so a condition coded in SNOMED CT and ICD-10 is found by either."""

    __tablename__ = "conditions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"),
                                            index=True)
    fhir_id: Mapped[str | None] = mapped_column(String(128))
    system: Mapped[str] = mapped_column(String(255), index=True)
    code: Mapped[str] = mapped_column(String(64), index=True)
    # The coding's display as the source wrote it ("Glioma"): what the descriptor publishes
    # of it when enough patients hold it (gateway/node/descriptors.py).
    display: Mapped[str | None] = mapped_column(String(255))
    onset_date: Mapped[date | None] = mapped_column(Date)


class Observation(NodeBase):
    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"),
                                            index=True)
    fhir_id: Mapped[str | None] = mapped_column(String(128))
    system: Mapped[str] = mapped_column(String(255))
    code: Mapped[str] = mapped_column(String(64), index=True)
    display: Mapped[str | None] = mapped_column(String(255))
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(32))
    effective_date: Mapped[date | None] = mapped_column(Date)


class SyncRun(NodeBase):
    """What each sync read, kept so an operator can see what was skipped and why."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dicom_source: Mapped[str] = mapped_column(String(255), default="")
    fhir_source: Mapped[str] = mapped_column(String(255), default="")
    report: Mapped[str] = mapped_column(Text, default="{}")
