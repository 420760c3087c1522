"""All SQL of the catalogue."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalogue.models import Dataset


def get_by_identifier(session: Session, identifier: str) -> Dataset | None:
    return session.execute(
        select(Dataset).where(Dataset.identifier == identifier)
    ).scalar_one_or_none()


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.execute(select(Dataset).order_by(Dataset.identifier)).scalars())


def add(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset
