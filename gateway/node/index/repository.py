"""All SQL of the node index."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from gateway.node.index.models import Condition, Observation, Patient, Series, Study, SyncRun

INDEX_TABLES = (Series, Study, Condition, Observation, Patient)  # children before parents


def clear(session: Session) -> None:
    for model in INDEX_TABLES:
        session.execute(delete(model))


def bulk_insert(session: Session, model: type, rows: Iterable[dict[str, Any]],
                batch: int = 5000) -> int:
    n = 0
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= batch:
            session.execute(insert(model), chunk)
            n += len(chunk)
            chunk = []
    if chunk:
        session.execute(insert(model), chunk)
        n += len(chunk)
    return n


def counts(session: Session) -> dict[str, int]:
    """Rows per table; `conditions` counts Condition resources, `condition_codings` the
    rows (one per coding: SNOMED CT and ICD-10 of one diagnosis are two rows)."""
    result = {}
    for name, model in (("patients", Patient), ("studies", Study), ("series", Series),
                        ("condition_codings", Condition), ("observations", Observation)):
        result[name] = session.execute(select(func.count()).select_from(model)).scalar_one()
    result["conditions"] = session.execute(
        select(func.count(func.distinct(Condition.fhir_id)))).scalar_one()
    result["instances"] = session.execute(
        select(func.coalesce(func.sum(Series.instance_count), 0))
    ).scalar_one()
    return result


def modality_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Series.modality, func.count()).group_by(Series.modality).order_by(Series.modality)
    ).all()
    return {modality: n for modality, n in rows}


def study_series(session: Session) -> list[tuple[str, str, str, int]]:
    """(study uid, series uid, modality, instances) for every series, in a stable order."""
    return [tuple(r) for r in session.execute(
        select(Study.study_uid, Series.series_uid, Series.modality, Series.instance_count)
        .join(Series.study).order_by(Study.study_uid, Series.series_uid)
    ).all()]


def study_uids(session: Session) -> list[str]:
    """Every indexed study's Study Instance UID, sorted: what staging retrieves from a PACS."""
    return list(session.scalars(select(Study.study_uid).order_by(Study.study_uid)))


_VERSION = select(
    select(func.count()).select_from(Patient).scalar_subquery(),
    select(func.max(Patient.id)).scalar_subquery(),
    select(func.count(Patient.record_key)).scalar_subquery(),
    select(func.max(SyncRun.id)).scalar_subquery(),
    select(func.count()).select_from(Study).scalar_subquery(),
    select(func.max(Study.id)).scalar_subquery(),
    select(func.count()).select_from(Series).scalar_subquery(),
)


def index_version(session: Session) -> tuple:
    """A cheap fingerprint of the index: it changes with every sync and with rows added or
    removed (or record keys filled) otherwise, so what is computed from the whole index
    (record keys, stratum domains) can be kept until it does."""
    return tuple(session.connection().execute(_VERSION).one())


def add_sync_run(session: Session, run: SyncRun) -> SyncRun:
    session.add(run)
    session.flush()
    return run


def last_sync_run(session: Session) -> SyncRun | None:
    return session.execute(
        select(SyncRun).order_by(SyncRun.id.desc()).limit(1)
    ).scalar_one_or_none()


def refresh_ages(session: Session) -> None:
    """Every study's patient age in completed years: (ymd(study) - ymd(birth)) div 10000,
    the same tuple comparison as `descriptors.age_at`; NULL without either date, or for a
    study dated before the birth."""
    from sqlalchemy import update

    from gateway.node.index.dates import ymd

    birth = (select(Patient.birth_date).where(Patient.id == Study.patient_id)
             .scalar_subquery())
    session.execute(update(Study).values(age_at_study=None))
    session.execute(
        update(Study)
        .where(Study.study_date.is_not(None),
               # A study dated before the birth has no age (not a negative one).
               select(Patient.id).where(Patient.id == Study.patient_id,
                                        Patient.birth_date <= Study.study_date).exists())
        .values(age_at_study=(ymd(Study.study_date) - ymd(birth)) // 10000))
