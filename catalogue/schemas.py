"""The catalogue's pydantic in/out schemas (the node's wire format is spe.wire.descriptors)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AccessRights = Literal["PUBLIC", "RESTRICTED", "NON_PUBLIC"]


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    identifier: str
    node_id: str
    node_name: str
    collection: str
    title: str
    description: str
    keywords: list[str]
    health_categories: list[str]
    themes: list[str]
    dataset_type: str
    publisher_name: str
    contact_email: str
    hdab_name: str
    purposes: list[str]
    legal_bases: list[str]
    access_rights: AccessRights
    applicable_legislation: list[str]
    number_of_records: int | None
    number_of_unique_individuals: int | None
    number_of_series: int | None
    number_of_instances: int | None
    min_typical_age: int | None
    max_typical_age: int | None
    temporal_start: date | None
    temporal_end: date | None
    modalities: list[dict[str, Any]]
    body_parts: list[dict[str, Any]]
    manufacturers: list[dict[str, Any]]
    coding_systems: list[str]
    completeness: dict[str, Any]
    suppressed: list[str]
    suppression_threshold: int
    harvested_at: datetime
    curated_at: datetime | None


class CurationIn(BaseModel):
    """Fields people at the centre edit; a harvest never overwrites them."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, min_length=1)
    keywords: list[str] | None = Field(default=None, min_length=1)
    health_categories: list[str] | None = Field(default=None, min_length=1)
    themes: list[str] | None = Field(default=None, min_length=1)
    contact_email: str | None = Field(default=None, min_length=3, max_length=320)
    access_rights: AccessRights | None = None


class HarvestOutcome(BaseModel):
    """What one harvest did to one dataset (or why a node could not be harvested)."""

    node: str
    identifier: str | None = None
    created: bool = False
    error: str | None = None
