"""Catalogue tables: one row per dataset (one per node and collection in this slice).

Curated fields are edited by people at the centre and never overwritten by a harvest;
harvested fields are replaced by every harvest from the node's descriptor. Lists are JSON
(SQLAlchemy's JSON type: TEXT on SQLite, json on PostgreSQL).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import CentralBase


class Dataset(CentralBase):
    __tablename__ = "catalogue_datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stable across harvests: "<node_id>/<collection>".
    identifier: Mapped[str] = mapped_column(String(300), unique=True)
    node_id: Mapped[str] = mapped_column(String(120), index=True)
    collection: Mapped[str] = mapped_column(String(120))

    # Curated (filled with defaults on the first harvest, then left to people).
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text)
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    health_categories: Mapped[list[str]] = mapped_column(JSON, default=list)  # IRIs
    themes: Mapped[list[str]] = mapped_column(JSON, default=list)  # IRIs (EU data-theme)
    dataset_type: Mapped[str] = mapped_column(String(255), default="")
    publisher_name: Mapped[str] = mapped_column(String(255))
    publisher_email: Mapped[str] = mapped_column(String(320))
    contact_email: Mapped[str] = mapped_column(String(320))
    hdab_name: Mapped[str] = mapped_column(String(255))
    hdab_email: Mapped[str] = mapped_column(String(320))
    purposes: Mapped[list[str]] = mapped_column(JSON, default=list)  # DPV purpose IRIs
    legal_bases: Mapped[list[str]] = mapped_column(JSON, default=list)  # DPV legal-basis IRIs
    access_rights: Mapped[str] = mapped_column(String(16))  # PUBLIC | RESTRICTED | NON_PUBLIC
    # Who the data covers, in words; empty: made from the harvested figures (catalogue.rdf).
    population_coverage: Mapped[str] = mapped_column(Text, default="")
    applicable_legislation: Mapped[list[str]] = mapped_column(JSON, default=list)  # ELI IRIs
    curated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    curated_by: Mapped[str | None] = mapped_column(String(320))

    # Harvested from the node's descriptor; None where the node suppressed a small count.
    node_name: Mapped[str] = mapped_column(String(255))
    number_of_records: Mapped[int | None] = mapped_column(Integer)  # studies
    number_of_unique_individuals: Mapped[int | None] = mapped_column(Integer)  # patients
    number_of_series: Mapped[int | None] = mapped_column(Integer)
    number_of_instances: Mapped[int | None] = mapped_column(Integer)
    min_typical_age: Mapped[int | None] = mapped_column(Integer)
    max_typical_age: Mapped[int | None] = mapped_column(Integer)
    temporal_start: Mapped[date | None] = mapped_column(Date)
    temporal_end: Mapped[date | None] = mapped_column(Date)
    modalities: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    body_parts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    manufacturers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    coding_systems: Mapped[list[str]] = mapped_column(JSON, default=list)
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # ICD-10
    # SNOMED CT / LOINC terms with their displays: {"system", "code", "display", "patients"}.
    clinical_terms: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    completeness: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    suppressed: Mapped[list[str]] = mapped_column(JSON, default=list)
    suppression_threshold: Mapped[int] = mapped_column(Integer)
    harvested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetFacet(CentralBase):
    """One (facet, value) a dataset carries, e.g. ("modality", "MR"): what search filters
    and counts on, in plain SQL that runs the same on SQLite and PostgreSQL. Rebuilt from
    the dataset on every harvest and curation (`catalogue.facets`).

    The full-text side lives beside it, per dialect: an FTS5 table `catalogue_fts` on
    SQLite, a table `catalogue_text` of tsvectors with a GIN index on PostgreSQL
    (migration 0002); `catalogue.repository` keeps both in step.
    """

    __tablename__ = "catalogue_facets"
    __table_args__ = (Index("ix_catalogue_facets_lookup", "facet", "value", "dataset_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("catalogue_datasets.id", ondelete="CASCADE"), index=True)
    facet: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(300))


class CatalogueRevision(CentralBase):
    """One row whose counter every change to the catalogue's datasets bumps, in the same
    transaction: search processes compare it to rebuild their in-memory facet index
    (`catalogue.search`) only when something changed."""

    __tablename__ = "catalogue_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
