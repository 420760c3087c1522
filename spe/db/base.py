"""Declarative bases: one metadata per database (central service, institution node)."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names so Alembic migrations match on SQLite and PostgreSQL alike.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class CentralBase(DeclarativeBase):
    """Tables of the central service's database."""

    metadata = MetaData(naming_convention=NAMING)


class NodeBase(DeclarativeBase):
    """Tables of an institution node's database."""

    metadata = MetaData(naming_convention=NAMING)
