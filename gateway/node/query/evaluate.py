"""A federated query (`spe.wire.query.Query`) evaluated against the node's index, in SQL.

`matching_patients` compiles the criterion tree of `Query.where` into ONE statement over the
index tables (`gateway.node.index.models`): every leaf is `patients.id IN (subquery)`, and
`and` / `or` / `not` become SQL AND / OR / NOT. The database does the matching; Python only
receives patient ids, never index rows. The ids themselves (not just their count) come
back because the disclosure check elsewhere compares the sets of successive queries to
catch differencing attacks.

`evaluate` runs that statement and, for a stratified answer (`Answer.kind == "stratified"`),
one more that yields (stratum value, ..., patient id) rows, grouped into cells here.

Everything is written with portable SQLAlchemy constructs, tested on SQLite and PostgreSQL:
dates are compared as dates or as `year*10000 + month*100 + day` integers built with
`extract()`, never with dialect date arithmetic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.functions import FunctionElement

from gateway.node.index.models import Condition, Observation, Patient, Series, Study
from spe.wire.query import (
    AGE_BANDS,
    CODE_SYSTEMS,
    AgeRange,
    And,
    ConditionCriterion,
    Criterion,
    ImagingCriterion,
    Not,
    ObservationCriterion,
    Or,
    PatientCriterion,
    Query,
    Stratum,
)

UNKNOWN = "unknown"
"""The stratum value of a patient whose sex or age is not known (`Answer.by`)."""

CellKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The patients a query selects at one node, before any disclosure control.

    `ids` are the sorted, unique index ids (int64) of the patients matching `Query.where`.
    `cells` is filled for stratified answers only: its key is ((stratum, value), ...) in the
    order of `Answer.by`, e.g. (("sex", "female"), ("age_band", "40-64")), its value the
    sorted unique ids of that cell. Empty cells are absent. Cells need not add up to `ids`:
    by `modality` a patient is in the cell of each modality they have a series of (so in
    several, or in none if they have no images).
    """

    ids: np.ndarray
    cells: dict[CellKey, np.ndarray]

    def __eq__(self, other: object) -> bool:
        # numpy arrays do not compare to a single bool, so the dataclass default would raise.
        if not isinstance(other, Evaluation):
            return NotImplemented
        return (np.array_equal(self.ids, other.ids) and self.cells.keys() == other.cells.keys()
                and all(np.array_equal(v, other.cells[k]) for k, v in self.cells.items()))


# ---------------------------------------------------------------------------- dates


class ymd(FunctionElement):  # noqa: N801 - reads as the SQL function it renders to
    """`year*10000 + month*100 + day` of a date expression, computed by the database.

    Completed years from birth `b` to day `d` are at least n exactly when
    ymd(d) - ymd(b) >= n*10000 (the same tuple comparison as `descriptors.age_at`), which
    works for two date columns on both dialects. Rendered per dialect: on SQLite, dates are
    ISO text, so dropping the dashes is the number (one call instead of three STRFTIMEs
    and casts per row: the age-at-study criterion went from 57 to about 10 ms at 10,000
    patients); elsewhere three EXTRACTs.
    """

    type = Integer()
    inherit_cache = True


@compiles(ymd)
def _ymd_default(element, compiler, **kw) -> str:
    (column,) = list(element.clauses)
    # Parenthesised: it stands as one operand (ymd(d) - ymd(b)).
    return "(" + compiler.process(
        cast(extract("year", column), Integer) * 10000
        + cast(extract("month", column), Integer) * 100
        + cast(extract("day", column), Integer), **kw) + ")"


@compiles(ymd, "sqlite")
def _ymd_sqlite(element, compiler, **kw) -> str:
    (column,) = list(element.clauses)
    return f"CAST(REPLACE({compiler.process(column, **kw)}, '-', '') AS INTEGER)"


def _ymd(column) -> ColumnElement[int]:
    return ymd(column)


def _ymd_of(day: date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def _years_before(day: date, years: int) -> date:
    """The latest birth date that makes someone at least `years` old on `day`.

    (b.year + n, b.month, b.day) <= day  <=>  b <= (day.year - n, day.month, day.day); when
    that is 29 February of a common year, the latest real date below it is the 28th.
    """
    year = day.year - years
    if year < 1:
        return date.min
    try:
        return day.replace(year=year)
    except ValueError:
        return day.replace(year=year, day=28)


# ---------------------------------------------------------------------------- leaves
# Every leaf is `patients.id IN (uncorrelated subquery)`: patients.id and the subqueries'
# patient ids are NOT NULL columns, so each leaf is strictly true or false (also as NOT IN)
# and NOT is the exact complement over the node's patients. A bare comparison such as
# `sex = 'female'` would be NULL for a patient without sex, and NOT would then drop that
# patient from both sides.


def _in(subquery: Select) -> ColumnElement[bool]:
    # correlate(None): a leaf never refers to the enclosing query, even when that query
    # (the stratified one) has the same tables in its FROM.
    return Patient.id.in_(subquery.correlate(None))


def _age_at_date(age: AgeRange, at: date) -> ColumnElement[bool]:
    p = aliased(Patient)
    # age >= min  <=>  born on or before `at` minus min years; age <= max  <=>  born after
    # `at` minus (max + 1) years. No min still means born by then: nobody is -1 years old.
    conditions = [p.birth_date.is_not(None), p.birth_date <= _years_before(at, age.min or 0)]
    if age.max is not None:
        conditions.append(p.birth_date > _years_before(at, age.max + 1))
    return _in(select(p.id).where(*conditions))


def _age_at_study(age: AgeRange) -> ColumnElement[bool]:
    # One study must satisfy both bounds (AgeRange: "at each of the patient's studies"):
    # someone scanned at 30 and at 70 is not "40 to 60 at study". The age is the study's
    # indexed `age_at_study`, computed by the sync with ymd() below.
    conditions = [Study.age_at_study >= (age.min or 0)]
    if age.max is not None:
        conditions.append(Study.age_at_study <= age.max)
    return _in(select(Study.patient_id).where(*conditions))


def _sex_is(column, sex: str) -> ColumnElement[bool]:
    # "unknown" also finds patients whose sex was never recorded, as the `sex` stratum puts
    # them in its "unknown" cell: a count and the matching cell must agree.
    if sex == UNKNOWN:
        return or_(column.is_(None), column == "", column == UNKNOWN)
    return column == sex


def _patient(c: PatientCriterion) -> ColumnElement[bool]:
    parts = []
    if c.sex is not None:
        p = aliased(Patient)
        parts.append(_in(select(p.id).where(_sex_is(p.sex, c.sex))))
    if c.age is not None and c.age.at == "study":
        parts.append(_age_at_study(c.age))
    elif c.age is not None:
        parts.append(_age_at_date(c.age, c.age.at))
    return and_(*parts)


def _condition(c: ConditionCriterion) -> ColumnElement[bool]:
    if c.prefix:
        # LIKE 'C71%' with `_` and `%` escaped (autoescape), so "G1_" cannot match "G1A";
        # the substr equality keeps the match case-sensitive on SQLite, whose LIKE ignores
        # case, as `=` and PostgreSQL's LIKE do not.
        code = and_(Condition.code.startswith(c.code, autoescape=True),
                    func.substr(Condition.code, 1, len(c.code)) == c.code)
    else:
        code = Condition.code == c.code
    return _in(select(Condition.patient_id)
               .where(Condition.system.in_(CODE_SYSTEMS[c.system]), code))


def _observation(c: ObservationCriterion) -> ColumnElement[bool]:
    # Bounds are inclusive; an observation without a value fails any bound. Without `unit`
    # the bounds apply to values in whatever unit the index holds (see the wire model).
    conditions = [Observation.system.in_(CODE_SYSTEMS[c.system]), Observation.code == c.code]
    if c.min is not None:
        conditions.append(Observation.value >= c.min)
    if c.max is not None:
        conditions.append(Observation.value <= c.max)
    if c.unit is not None:
        conditions.append(Observation.unit == c.unit)
    return _in(select(Observation.patient_id).where(*conditions))


def _imaging(c: ImagingCriterion) -> ColumnElement[bool]:
    # All fields on ONE series (and its study), as the wire model says: an MR of the head
    # and a CT of the chest do not make "MR of the chest".
    conditions = []
    if c.modality:
        conditions.append(Series.modality.in_(c.modality))
    if c.body_part:
        conditions.append(Series.body_part.in_(c.body_part))
    if c.manufacturer is not None:
        # lower() on both sides: SQLite folds ASCII only, so folding the parameter in Python
        # would miss a non-ASCII name given exactly as stored.
        conditions.append(func.lower(Series.manufacturer) == func.lower(c.manufacturer))
    if c.study_from is not None:
        conditions.append(Study.study_date >= c.study_from)
    if c.study_to is not None:
        conditions.append(Study.study_date <= c.study_to)
    return _in(select(Study.patient_id).join(Series, Series.study_id == Study.id)
               .where(*conditions))


def _compile(c: Criterion) -> ColumnElement[bool]:
    match c:
        case And():
            return and_(*(_compile(x) for x in c.of))
        case Or():
            return or_(*(_compile(x) for x in c.of))
        case Not():
            return not_(_compile(c.of))
        case PatientCriterion():
            return _patient(c)
        case ConditionCriterion():
            return _condition(c)
        case ObservationCriterion():
            return _observation(c)
        case ImagingCriterion():
            return _imaging(c)
    raise TypeError(f"not a query criterion: {type(c).__name__}")


def matching_patients(where: Criterion, *, today: date) -> Select:
    """`SELECT patients.id` of the patients matching `where` (`spe.wire.query.Criterion`),
    one statement whatever the depth of the tree.

    `today` is the evaluation date. No criterion of the current wire model depends on it
    (ages are at a given date or at study); it is part of the signature so that one that
    does needs no change of callers.
    """
    return select(Patient.id).where(_compile(where))


# ---------------------------------------------------------------------------- strata


def _age_band(today: date):
    """The age band (`AGE_BANDS`) at the patient's latest dated study, or at `today` when
    they have none; "unknown" without a birth date (or with one after that day)."""
    latest = (select(Study.patient_id.label("patient_id"),
                     func.max(Study.study_date).label("latest"))
              .group_by(Study.patient_id).subquery("latest_study"))
    years = (func.coalesce(_ymd(latest.c.latest), _ymd_of(today)) - _ymd(Patient.birth_date))
    bands = [(and_(years >= low * 10000, years < (high + 1) * 10000), literal(name, String))
             for name, (low, high) in AGE_BANDS.items()]
    value = case((Patient.birth_date.is_(None), literal(UNKNOWN, String)), *bands,
                 else_=literal(UNKNOWN, String))
    return value, latest, latest.c.patient_id == Patient.id


def _stratified(session: Session, where: ColumnElement[bool], by: list[Stratum], *,
                node_id: str, today: date) -> dict[CellKey, np.ndarray]:
    columns = []
    stmt_joins: list[tuple[object, ColumnElement[bool], bool]] = []  # (from, on, outer)
    for stratum in by:
        if stratum == "sex":
            columns.append(case((or_(Patient.sex.is_(None), Patient.sex == ""),
                                 literal(UNKNOWN, String)), else_=Patient.sex))
        elif stratum == "age_band":
            value, latest, on = _age_band(today)
            columns.append(value)
            stmt_joins.append((latest, on, True))  # patients without studies stay
        elif stratum == "modality":
            modalities = (select(Study.patient_id.label("patient_id"),
                                 Series.modality.label("modality"))
                          .join(Series, Series.study_id == Study.id).distinct()
                          .subquery("patient_modality"))
            columns.append(modalities.c.modality)
            # Inner join: one row per modality the patient has, none without images.
            stmt_joins.append((modalities, modalities.c.patient_id == Patient.id, False))
        elif stratum == "site":
            # The cast gives PostgreSQL a type for a parameter in the select list.
            columns.append(cast(literal(node_id), String))
        else:
            raise ValueError(f"unknown stratum {stratum!r}")
    stmt = select(*columns, Patient.id).select_from(Patient)
    for target, on, outer in stmt_joins:
        stmt = stmt.join(target, on, isouter=outer)
    # DISTINCT rather than GROUP BY: PostgreSQL cannot match a GROUP BY CASE with bound
    # parameters to the same CASE in the select list.
    rows = session.execute(stmt.where(where).distinct()).all()
    cells: dict[CellKey, list[int]] = defaultdict(list)
    for *values, patient_id in rows:
        cells[tuple(zip(by, values, strict=True))].append(patient_id)
    return {key: np.unique(np.asarray(ids, dtype=np.int64)) for key, ids in cells.items()}


def stratum_values(session: Session, stratum: Stratum, *, node_id: str) -> list[str]:
    """Every value a stratum can take at this node, whatever the query: the cells an
    answer must show (an absent cell would say "none here" as plainly as a 0)."""
    if stratum == "sex":
        return ["female", "male", "other", UNKNOWN]
    if stratum == "age_band":
        return [*AGE_BANDS, UNKNOWN]
    if stratum == "modality":
        return sorted(m for m in session.scalars(select(Series.modality).distinct()) if m)
    return [node_id]


def evaluate(session: Session, query: Query, *, node_id: str,
             today: date | None = None) -> Evaluation:
    """The patients matching `query.where` and, for a stratified `query.answer`, the
    patients of each cell (see `Evaluation`). `node_id` is the value of the `site`
    stratum; `today` (default: the current date) dates the age of patients without a
    study for the `age_band` stratum."""
    today = today or date.today()
    stmt = matching_patients(query.where, today=today)
    ids = np.asarray(session.scalars(stmt.order_by(Patient.id)).all(), dtype=np.int64)
    cells: dict[CellKey, np.ndarray] = {}
    if query.answer.kind == "stratified":
        cells = _stratified(session, stmt.whereclause, query.answer.by, node_id=node_id,
                            today=today)
    return Evaluation(ids=ids, cells=cells)


__all__ = ["UNKNOWN", "Evaluation", "evaluate", "matching_patients", "stratum_values"]
