"""The node's dataset descriptor: what the central catalogue harvests, computed from the index.

Public-tier metadata (ARCHITECTURE: "dataset descriptors with small counts suppressed"):
every count below the threshold is replaced by `None` and named in `suppressed`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.node.index.models import Condition, Patient, Series, Study
from spe.errors import Forbidden
from spe.policy import PolicyService
from spe.policy.disclosure import NoCountRule, count_rule
from spe.wire.descriptors import Completeness, DatasetDescriptor, ValueCount
from spe.wire.query import CODE_SYSTEMS

ICD10_SYSTEMS = CODE_SYSTEMS["icd-10"]  # the same codes a query's "icd-10" finds


class DescriptorRefused(Forbidden):
    """The disclosure policy gave no rule for descriptors: none is computed (fail closed)."""


def descriptor_threshold(policy: PolicyService) -> int:
    """The smallest count a descriptor may show, from `policies/disclosure`."""
    try:
        return count_rule(policy, "public", "catalogue_descriptor",
                          least_min_count=1).min_count
    except NoCountRule as exc:
        raise DescriptorRefused(str(exc)) from None


def age_at(birth: date, on: date) -> int:
    """Completed years between a birth date and a day."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


class _Suppressor:
    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.suppressed: list[str] = []

    def count(self, name: str, n: int) -> int | None:
        if n < self.threshold:
            self.suppressed.append(name)
            return None
        return n

    def values(self, field: str, rows: Iterable[tuple[str | None, int]]) -> list[ValueCount]:
        return [ValueCount(value=value, count=self.count(f"{field}:{value}", n))
                for value, n in rows if value]

    def share(self, name: str, part: int, whole: int) -> float | None:
        if whole < self.threshold:
            self.suppressed.append(name)
            return None
        return round(part / whole, 4)


def _grouped(session: Session, column) -> list[tuple[str | None, int]]:
    return [(v, n) for v, n in session.execute(
        select(column, func.count()).group_by(column).order_by(column)).all()]


def _icd10_categories(session: Session, s: _Suppressor) -> list[ValueCount]:
    """Patients per ICD-10 category (the code's first three characters)."""
    category = func.substr(Condition.code, 1, 3)
    rows = session.execute(
        select(category, func.count(func.distinct(Condition.patient_id)))
        .where(Condition.system.in_(ICD10_SYSTEMS)).group_by(category).order_by(category)).all()
    kept = [ValueCount(value=code.upper(), count=n) for code, n in rows
            if code and n >= s.threshold]
    if len(kept) < len(rows):
        s.suppressed.append("conditions:other")
    return kept


def _scalar(session: Session, stmt) -> int:
    return int(session.execute(stmt).scalar_one() or 0)


def compute_descriptor(session: Session, *, node_id: str, node_name: str,
                       threshold: int) -> DatasetDescriptor:
    """One descriptor of the node's whole index (one collection per node for now)."""
    s = _Suppressor(threshold)
    patients = _scalar(session, select(func.count()).select_from(Patient))
    studies = _scalar(session, select(func.count()).select_from(Study))
    series = _scalar(session, select(func.count()).select_from(Series))
    instances = _scalar(session, select(func.coalesce(func.sum(Series.instance_count), 0)))

    ages = [age_at(birth, on) for birth, on in session.execute(
        select(Patient.birth_date, Study.study_date).join(Study.patient)
        .where(Patient.birth_date.is_not(None), Study.study_date.is_not(None))).all()]
    ages = [a for a in ages if a >= 0]
    start, end = session.execute(select(func.min(Study.study_date),
                                        func.max(Study.study_date))).one()

    studies_with_body_part = _scalar(session, select(func.count(func.distinct(Series.study_id)))
                                     .where(Series.body_part.is_not(None),
                                            Series.body_part != ""))
    studies_with_date = _scalar(session, select(func.count()).select_from(Study)
                                .where(Study.study_date.is_not(None)))
    with_birth = _scalar(session, select(func.count()).select_from(Patient)
                         .where(Patient.birth_date.is_not(None)))
    with_sex = _scalar(session, select(func.count()).select_from(Patient)
                       .where(Patient.sex.is_not(None), Patient.sex != ""))
    systems = sorted(v for (v,) in session.execute(select(Condition.system).distinct()).all()
                     if v)

    patients_out = s.count("patients", patients)
    age_known = patients_out is not None and len(ages) >= threshold
    if ages and not age_known:
        s.suppressed += ["min_age", "max_age"]
    # The study-date range says when, not who: kept unless there are too few studies.
    dates_known = studies >= threshold
    if start is not None and not dates_known:
        s.suppressed += ["temporal_start", "temporal_end"]
    return DatasetDescriptor(
        node_id=node_id,
        node_name=node_name,
        generated_at=datetime.now(UTC),
        suppression_threshold=threshold,
        patients=patients_out,
        studies=s.count("studies", studies),
        series=s.count("series", series),
        instances=s.count("instances", instances),
        min_age=min(ages) if age_known else None,
        max_age=max(ages) if age_known else None,
        temporal_start=start if dates_known else None,
        temporal_end=end if dates_known else None,
        modalities=s.values("modalities", _grouped(session, Series.modality)),
        body_parts=s.values("body_parts", _grouped(session, Series.body_part)),
        manufacturers=s.values("manufacturers", _grouped(session, Series.manufacturer)),
        coding_systems=systems,
        conditions=_icd10_categories(session, s),
        completeness=Completeness(
            study_body_part=s.share("completeness.study_body_part", studies_with_body_part,
                                    studies),
            study_date=s.share("completeness.study_date", studies_with_date, studies),
            patient_birth_date=s.share("completeness.patient_birth_date", with_birth, patients),
            patient_sex=s.share("completeness.patient_sex", with_sex, patients),
        ),
        suppressed=s.suppressed,
    )


__all__ = ["DescriptorRefused", "age_at", "compute_descriptor", "descriptor_threshold"]
