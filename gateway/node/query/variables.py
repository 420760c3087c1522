"""The variables of the federated statistics (`spe.wire.query.Variable`), one value per
patient of a cohort, read from the node's index in SQL.

Every statement is restricted to the cohort by `patients.id IN (the cohort's statement)`
(`evaluate.matching_patients`: the same cohort language as the counts) and returns
(patient id, what the value is made of); the values are put together with numpy, aligned
on the cohort's sorted ids. Portable SQLAlchemy only (SQLite and PostgreSQL): dates come
back as dates and are compared in Python, never with dialect date arithmetic.

A patient without a value is NaN (numbers) or None (levels): no birth date (or one after
the day the age is taken), no observation of that code in that unit, a sex other than
female or male. Conditions and imaging counts always have a value (0 when none).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from gateway.node.index.models import Condition, Observation, Patient, Series, Study
from spe.wire.query import (
    AGE_BANDS,
    CODE_SYSTEMS,
    AgeVariable,
    ConditionEvent,
    ConditionVariable,
    Event,
    ImagingVariable,
    ObservationVariable,
    SexVariable,
    StudyEvent,
    Variable,
)


def _in_cohort(column, cohort: Select):
    return column.in_(cohort.correlate(None))


def _align(ids: np.ndarray, pairs: Iterable[tuple[int, float]], fill: float) -> np.ndarray:
    """Values for the sorted `ids` from (patient id, value) pairs (ids absent: `fill`)."""
    out = np.full(len(ids), fill, dtype=np.float64)
    pairs = list(pairs)
    if pairs and len(ids):
        who = np.fromiter((p for p, _ in pairs), dtype=np.int64, count=len(pairs))
        what = np.fromiter((np.nan if v is None else v for _, v in pairs),
                           dtype=np.float64, count=len(pairs))
        at = np.searchsorted(ids, who)
        ok = (at < len(ids)) & (ids[np.minimum(at, len(ids) - 1)] == who)
        out[at[ok]] = what[ok]
    return out


def completed_years(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _ages(session: Session, ids: np.ndarray, cohort: Select, today: date) -> np.ndarray:
    latest = (select(Study.patient_id, func.max(Study.study_date).label("latest"))
              .where(_in_cohort(Study.patient_id, cohort)).group_by(Study.patient_id)
              .subquery())
    rows = session.execute(
        select(Patient.id, Patient.birth_date, latest.c.latest)
        .outerjoin(latest, latest.c.patient_id == Patient.id)
        .where(_in_cohort(Patient.id, cohort))).all()

    def age(born: date | None, at: date | None) -> float:
        if born is None:
            return np.nan
        years = completed_years(born, at or today)
        return float(years) if years >= 0 else np.nan

    return _align(ids, ((pid, age(born, at)) for pid, born, at in rows), np.nan)


def _sex(session: Session, ids: np.ndarray, cohort: Select) -> np.ndarray:
    rows = session.execute(select(Patient.id, Patient.sex)
                           .where(_in_cohort(Patient.id, cohort))).all()
    code = {"female": 0.0, "male": 1.0}
    return _align(ids, ((pid, code.get(sex or "", np.nan)) for pid, sex in rows), np.nan)


def _observation(session: Session, ids: np.ndarray, cohort: Select,
                 v: ObservationVariable) -> np.ndarray:
    match = [Observation.system.in_(CODE_SYSTEMS[v.system]), Observation.code == v.code,
             Observation.unit == v.unit, Observation.value.is_not(None),
             _in_cohort(Observation.patient_id, cohort)]
    if v.summary == "mean":
        rows = session.execute(
            select(Observation.patient_id, func.avg(Observation.value))
            .where(*match).group_by(Observation.patient_id)).all()
        return _align(ids, ((pid, float(m)) for pid, m in rows), np.nan)
    # The latest by date (undated ones before any dated one), then by row: sorted here,
    # the last row of each patient wins.
    dated = case((Observation.effective_date.is_(None), 0), else_=1)
    rows = session.execute(
        select(Observation.patient_id, Observation.value).where(*match)
        .order_by(Observation.patient_id, dated, Observation.effective_date,
                  Observation.id)).all()
    latest = {pid: value for pid, value in rows}
    return _align(ids, latest.items(), np.nan)


def _condition_matches(system: str, code: str, prefix: bool) -> list:
    systems = CODE_SYSTEMS[system]
    if not prefix:
        return [Condition.system.in_(systems), Condition.code == code]
    # As the counts' criterion (evaluate._condition): case-sensitive on SQLite too.
    return [Condition.system.in_(systems), Condition.code.startswith(code, autoescape=True),
            func.substr(Condition.code, 1, len(code)) == code]


def _condition(session: Session, ids: np.ndarray, cohort: Select,
               v: ConditionVariable) -> np.ndarray:
    having = session.scalars(
        select(Condition.patient_id).where(*_condition_matches(v.system, v.code, v.prefix),
                                           _in_cohort(Condition.patient_id, cohort))
        .distinct()).all()
    return _align(ids, ((pid, 1.0) for pid in having), 0.0)


def _imaging(session: Session, ids: np.ndarray, cohort: Select,
             v: ImagingVariable) -> np.ndarray:
    rows = session.execute(
        select(Study.patient_id, func.count(Study.id.distinct()))
        .join(Series, Series.study_id == Study.id)
        .where(Series.modality == v.modality, _in_cohort(Study.patient_id, cohort))
        .group_by(Study.patient_id)).all()
    return _align(ids, ((pid, float(n)) for pid, n in rows), 0.0)


def values(session: Session, v: Variable, ids: np.ndarray, cohort: Select, *,
           today: date) -> np.ndarray:
    """The variable's value for each of the cohort's sorted `ids` (float64, NaN: none).
    `cohort` is the statement selecting the cohort's patient ids."""
    match v:
        case AgeVariable():
            return _ages(session, ids, cohort, today)
        case SexVariable():
            return _sex(session, ids, cohort)
        case ObservationVariable():
            return _observation(session, ids, cohort, v)
        case ConditionVariable():
            return _condition(session, ids, cohort, v)
        case ImagingVariable():
            return _imaging(session, ids, cohort, v)
    raise TypeError(type(v).__name__)


def levels_of(v: Variable, x: np.ndarray) -> tuple[list[str], list[str | None]]:
    """A table's levels for a variable and each patient's level (None: no value): sex
    female / male, a condition no / yes, age by band (`AGE_BANDS`), an imaging count as
    0, 1, 2, ...  The levels are the variable's domain, whatever the data (ages and
    counts: those present)."""
    if isinstance(v, SexVariable):
        names = ["female", "male"]
        return names, [None if np.isnan(a) else names[int(a)] for a in x]
    if isinstance(v, ConditionVariable):
        names = ["no", "yes"]
        return names, [names[int(a)] for a in x]
    if isinstance(v, AgeVariable):
        bands = list(AGE_BANDS)

        def band(a: float) -> str | None:
            if np.isnan(a):
                return None
            return next(n for n, (lo, hi) in AGE_BANDS.items() if lo <= a <= hi)
        return bands, [band(a) for a in x]
    present = sorted({int(a) for a in x if not np.isnan(a)})
    return [str(n) for n in present], [None if np.isnan(a) else str(int(a)) for a in x]


# ---------------------------------------------------------------------------- survival

@dataclass(frozen=True)
class Times:
    """Per patient of the cohort: time from the start event to the end event (`event`
    True) or to the last dated record (censored), in days; patients without a start
    event, or whose end came first, are left out (`ids` are those kept)."""

    ids: np.ndarray
    days: np.ndarray  # int64
    event: np.ndarray  # bool
    ended_before: int  # left out: the end event was before the start


def _first_dates(session: Session, e: Event, cohort: Select) -> dict[int, date]:
    if isinstance(e, ConditionEvent):
        stmt = (select(Condition.patient_id, func.min(Condition.onset_date))
                .where(*_condition_matches(e.system, e.code, e.prefix),
                       Condition.onset_date.is_not(None),
                       _in_cohort(Condition.patient_id, cohort))
                .group_by(Condition.patient_id))
    else:
        assert isinstance(e, StudyEvent)
        stmt = (select(Study.patient_id, func.min(Study.study_date))
                .where(Study.study_date.is_not(None), _in_cohort(Study.patient_id, cohort)))
        if e.modality is not None:
            stmt = stmt.where(Study.id.in_(select(Series.study_id)
                                           .where(Series.modality == e.modality)))
        stmt = stmt.group_by(Study.patient_id)
    return {pid: d for pid, d in session.execute(stmt).all() if d is not None}


def _last_dates(session: Session, cohort: Select) -> dict[int, date]:
    """Each patient's last dated record: a study, a condition's onset, an observation."""
    last: dict[int, date] = {}
    for column, pid in ((Study.study_date, Study.patient_id),
                        (Condition.onset_date, Condition.patient_id),
                        (Observation.effective_date, Observation.patient_id)):
        for p, d in session.execute(select(pid, func.max(column))
                                    .where(column.is_not(None), _in_cohort(pid, cohort))
                                    .group_by(pid)).all():
            if d is not None and (p not in last or d > last[p]):
                last[p] = d
    return last


def survival_times(session: Session, start: Event, end: Event, cohort: Select) -> Times:
    starts = _first_dates(session, start, cohort)
    ends = _first_dates(session, end, cohort)
    last = _last_dates(session, cohort)
    kept, days, event, before = [], [], [], 0
    for pid in sorted(starts):
        t0 = starts[pid]
        t1 = ends.get(pid)
        if t1 is not None and t1 < t0:
            before += 1
            continue
        if t1 is not None:
            kept.append(pid)
            days.append((t1 - t0).days)
            event.append(True)
        else:
            kept.append(pid)
            days.append(max((last.get(pid, t0) - t0).days, 0))
            event.append(False)
    return Times(np.asarray(kept, dtype=np.int64), np.asarray(days, dtype=np.int64),
                 np.asarray(event, dtype=bool), before)


#: Days per unit: a month is a twelfth of the mean Gregorian year.
UNIT_DAYS = {"day": 1.0, "week": 7.0, "month": 365.2425 / 12}


def in_units(days: np.ndarray, unit: str) -> np.ndarray:
    """Times binned to whole units (completed weeks or months)."""
    return np.floor(days / UNIT_DAYS[unit]).astype(np.float64)


__all__ = ["UNIT_DAYS", "Times", "completed_years", "in_units", "levels_of",
           "survival_times", "values"]
