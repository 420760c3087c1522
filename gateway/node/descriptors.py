"""The node's dataset descriptor: what the central catalogue harvests, computed from the index.

Public-tier metadata (ARCHITECTURE: "dataset descriptors with small counts suppressed"):
every count below the threshold is replaced by `None` and named in `suppressed`, with its
complements so that no total minus the shown counts gives it back; age and date ranges are
trimmed to at least the threshold of patients each side; lists (coding systems, condition
categories, SNOMED CT and LOINC terms with their displays) leave out what fewer patients
hold (gateway/node/descriptor_disclosure.py).
Before release the descriptor is checked as a reader would check it
(`spe.wire.descriptors.disclosure_problems`); a failure withholds it (fail closed).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import func, literal, select, union
from sqlalchemy.orm import Session

from gateway.node.descriptor_disclosure import (
    age_range,
    date_range,
    hidden_cells,
    share_hidden,
    values_give_counts_away,
)
from gateway.node.index.models import Condition, Observation, Patient, Series, Study
from spe.errors import Forbidden
from spe.policy import PolicyService
from spe.policy.disclosure import NoCountRule, count_rule
from spe.wire.descriptors import (
    MAX_ITEMS,
    SHARE_DIGITS,
    CodedTerm,
    Completeness,
    DatasetDescriptor,
    ValueCount,
    disclosure_problems,
)
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

    def breakdown(self, field: str, rows: list[tuple[str | None, int]]) -> list[ValueCount]:
        """Counts per value of one breakdown of the series, with complements suppressed."""
        counts = {value: n for value, n in rows if value}
        unrecorded = sum(n for value, n in rows if not value)
        hidden = hidden_cells(counts, unrecorded, self.threshold)
        if values_give_counts_away(counts, unrecorded, hidden, self.threshold):
            self.suppressed.append(f"{field}:other")  # none listed
            return []
        self.suppressed += [f"{field}:{value}" for value in sorted(counts) if value in hidden]
        return [ValueCount(value=value, count=None if value in hidden else n)
                for value, n in sorted(counts.items())]

    def share(self, name: str, part: int, whole: int) -> float | None:
        if whole < self.threshold or share_hidden(part, whole, self.threshold):
            self.suppressed.append(name)
            return None
        return round(part / whole, SHARE_DIGITS)

    def listed(self, name: str, rows: list[tuple[str | None, int]]) -> list[tuple[str, int]]:
        """Values held by at least the threshold; "<name>:other" when some are left out
        (not named: a rare value at a named site says too much)."""
        kept = [(value, n) for value, n in rows if value and n >= self.threshold]
        if len(kept) < len([value for value, _ in rows if value]):
            self.suppressed.append(f"{name}:other")
        return kept


def _grouped(session: Session, column) -> list[tuple[str | None, int]]:
    return [(v, n) for v, n in session.execute(
        select(column, func.count()).group_by(column).order_by(column)).all()]


def _icd10_categories(session: Session, s: _Suppressor) -> list[ValueCount]:
    """Patients per ICD-10 category (the code's first three characters)."""
    category = func.substr(Condition.code, 1, 3)
    rows = session.execute(
        select(category, func.count(func.distinct(Condition.patient_id)))
        .where(Condition.system.in_(ICD10_SYSTEMS)).group_by(category).order_by(category)).all()
    return [ValueCount(value=code.upper(), count=n)
            for code, n in s.listed("conditions", [(c, n) for c, n in rows])]


def _clinical_terms(session: Session, s: _Suppressor) -> list[CodedTerm]:
    """Patients per (system, code, display) of the conditions not coded in ICD-10 (whose
    categories `conditions` publishes) and of the observations: the SNOMED CT and LOINC
    names the catalogue is searched by. A term of fewer than the threshold of patients is
    left out whole, its display with it (free text says as much as a code)."""
    def held(model, *where):
        return select(model.system, model.code,
                      func.coalesce(model.display, literal("")).label("display"),
                      model.patient_id).where(*where)

    held_by = union(held(Condition, Condition.system.not_in(ICD10_SYSTEMS)),
                    held(Observation)).subquery()
    rows = session.execute(
        select(held_by.c.system, held_by.c.code, held_by.c.display,
               func.count(func.distinct(held_by.c.patient_id)))
        .group_by(held_by.c.system, held_by.c.code, held_by.c.display)).all()
    counted = [(f"{system}|{code}|{display}", n) for system, code, display, n in rows
               if system and code]
    kept = dict(s.listed("clinical_terms", counted))
    terms = [CodedTerm(system=system, code=code, display=display, patients=kept[key])
             for system, code, display, _ in rows
             if (key := f"{system}|{code}|{display}") in kept]
    if len(terms) > MAX_ITEMS:  # the most widely held, and say that some were left out
        terms = sorted(terms, key=lambda t: -t.patients)[:MAX_ITEMS]
        if "clinical_terms:other" not in s.suppressed:
            s.suppressed.append("clinical_terms:other")
    return sorted(terms, key=lambda t: (t.system, t.code, t.display))


def _coding_systems(session: Session, s: _Suppressor) -> list[str]:
    """Code systems of the conditions of at least the threshold of patients."""
    rows = session.execute(
        select(Condition.system, func.count(func.distinct(Condition.patient_id)))
        .group_by(Condition.system).order_by(Condition.system)).all()
    return [system for system, _ in s.listed("coding_systems", [(v, n) for v, n in rows])]


def _scalar(session: Session, stmt) -> int:
    return int(session.execute(stmt).scalar_one() or 0)


def _per_patient_extremes(session: Session) -> tuple[list[int], list[int], list[date],
                                                     list[date]]:
    """Each patient's youngest and oldest age at a study, first and last study day."""
    youngest: list[int] = []
    oldest: list[int] = []
    first: list[date] = []
    last: list[date] = []
    for birth, start, end in session.execute(
            select(Patient.birth_date, func.min(Study.study_date), func.max(Study.study_date))
            .join(Study.patient).where(Study.study_date.is_not(None))
            .group_by(Patient.id, Patient.birth_date)).all():
        first.append(start)
        last.append(end)
        if birth is not None and age_at(birth, start) >= 0:
            youngest.append(age_at(birth, start))
            oldest.append(age_at(birth, end))
    return youngest, oldest, first, last


def compute_descriptor(session: Session, *, node_id: str, node_name: str,
                       threshold: int) -> DatasetDescriptor:
    """One descriptor of the node's whole index (one collection per node for now).
    DescriptorRefused when the result would still say something about a small group."""
    s = _Suppressor(threshold)
    patients = _scalar(session, select(func.count()).select_from(Patient))
    studies = _scalar(session, select(func.count()).select_from(Study))
    series = _scalar(session, select(func.count()).select_from(Series))
    instances = _scalar(session, select(func.coalesce(func.sum(Series.instance_count), 0)))

    youngest, oldest, first, last = _per_patient_extremes(session)
    ages = age_range(youngest, oldest, threshold)
    if youngest and ages is None:
        s.suppressed += ["min_age", "max_age"]
    dates = date_range(first, last, threshold)
    if first and dates is None:
        s.suppressed += ["temporal_start", "temporal_end"]

    studies_with_body_part = _scalar(session, select(func.count(func.distinct(Series.study_id)))
                                     .where(Series.body_part.is_not(None),
                                            Series.body_part != ""))
    studies_with_date = _scalar(session, select(func.count()).select_from(Study)
                                .where(Study.study_date.is_not(None)))
    with_birth = _scalar(session, select(func.count()).select_from(Patient)
                         .where(Patient.birth_date.is_not(None)))
    with_sex = _scalar(session, select(func.count()).select_from(Patient)
                       .where(Patient.sex.is_not(None), Patient.sex != ""))

    descriptor = DatasetDescriptor(
        node_id=node_id,
        node_name=node_name,
        generated_at=datetime.now(UTC),
        suppression_threshold=threshold,
        patients=s.count("patients", patients),
        studies=s.count("studies", studies),
        series=s.count("series", series),
        instances=s.count("instances", instances),
        min_age=ages[0] if ages else None,
        max_age=ages[1] if ages else None,
        temporal_start=dates[0] if dates else None,
        temporal_end=dates[1] if dates else None,
        modalities=s.breakdown("modalities", _grouped(session, Series.modality)),
        body_parts=s.breakdown("body_parts", _grouped(session, Series.body_part)),
        manufacturers=s.breakdown("manufacturers", _grouped(session, Series.manufacturer)),
        coding_systems=_coding_systems(session, s),
        conditions=_icd10_categories(session, s),
        clinical_terms=_clinical_terms(session, s),
        completeness=Completeness(
            study_body_part=s.share("completeness.study_body_part", studies_with_body_part,
                                    studies),
            study_date=s.share("completeness.study_date", studies_with_date, studies),
            patient_birth_date=s.share("completeness.patient_birth_date", with_birth, patients),
            patient_sex=s.share("completeness.patient_sex", with_sex, patients),
        ),
        suppressed=s.suppressed,
    )
    problems = disclosure_problems(descriptor)
    if problems:  # a bug above, not a state of the data: withhold rather than publish
        raise DescriptorRefused("descriptor withheld: " + "; ".join(problems))
    return descriptor


__all__ = ["DescriptorRefused", "age_at", "compute_descriptor", "descriptor_threshold"]
