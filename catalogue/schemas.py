"""The catalogue's pydantic in/out schemas (the node's wire format is spe.wire.descriptors)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    population_coverage: str
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
    conditions: list[dict[str, Any]]  # {"value", "count", "title"}: ICD-10 and its WHO title
    clinical_terms: list[dict[str, Any]]
    completeness: dict[str, Any]
    suppressed: list[str]
    suppression_threshold: int
    harvested_at: datetime
    curated_at: datetime | None
    quality: QualityLabel | None = None  # filled by catalogue.quality


#: A dataset's description is read by everyone in the catalogue: a page of text, not a file.
MAX_DESCRIPTION = 10_000
MAX_TERMS = 50
Term = Annotated[str, Field(min_length=1, max_length=300)]


class CurationIn(BaseModel):
    """Fields people at the centre edit; a harvest never overwrites them."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, min_length=1, max_length=MAX_DESCRIPTION)
    keywords: list[Term] | None = Field(default=None, min_length=1, max_length=MAX_TERMS)
    health_categories: list[Term] | None = Field(default=None, min_length=1,
                                                 max_length=MAX_TERMS)
    themes: list[Term] | None = Field(default=None, min_length=1, max_length=MAX_TERMS)
    contact_email: str | None = Field(default=None, min_length=3, max_length=320)
    access_rights: AccessRights | None = None
    population_coverage: str | None = Field(default=None, min_length=1, max_length=2000)


class HarvestOutcome(BaseModel):
    """What one harvest did to one dataset (or why a node could not be harvested)."""

    node: str
    identifier: str | None = None
    created: bool = False
    error: str | None = None


MAX_PAGE_SIZE = 100
SortOrder = Literal["relevance", "title", "individuals"]
FacetValue = Annotated[str, Field(min_length=1, max_length=300)]


class SearchParams(BaseModel):
    """`GET /api/v1/catalogue/search`: free text, facet filters (values of one facet OR'ed,
    facets AND'ed), an age range the dataset's must overlap, and a page. Unknown parameters
    are refused, so a typo never silently widens a search."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(default="", max_length=200)
    health_category: list[FacetValue] = Field(default_factory=list, max_length=20)
    clinical_area: list[FacetValue] = Field(default_factory=list, max_length=20)
    modality: list[FacetValue] = Field(default_factory=list, max_length=20)
    body_part: list[FacetValue] = Field(default_factory=list, max_length=20)
    institution: list[FacetValue] = Field(default_factory=list, max_length=20)
    access_rights: list[AccessRights] = Field(default_factory=list, max_length=3)
    age_band: list[Literal["0-17", "18-39", "40-64", "65+"]] = Field(default_factory=list,
                                                                    max_length=4)
    condition: list[FacetValue] = Field(default_factory=list, max_length=20)
    age_min: int | None = Field(default=None, ge=0, le=150)
    age_max: int | None = Field(default=None, ge=0, le=150)
    page: int = Field(default=1, ge=1, le=10_000)
    size: int = Field(default=20, ge=1, le=MAX_PAGE_SIZE)
    sort: SortOrder = "relevance"

    @model_validator(mode="after")
    def _age_range_is_ordered(self) -> SearchParams:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError(f"age_min ({self.age_min}) is above age_max ({self.age_max})")
        return self

    def filters(self) -> dict[str, list[str]]:
        """The facet filters that are set, by facet name."""
        from catalogue.facets import FACETS

        return {f: list(getattr(self, f)) for f in FACETS if getattr(self, f)}


class QualityDimension(BaseModel):
    name: str
    score: float
    notes: list[str]


class QualityLabel(BaseModel):
    """What can be computed of the EHDS Art. 78 data quality and utility label."""

    label: Literal["bronze", "silver", "gold", "platinum"]
    score: float
    dimensions: list[QualityDimension]


class QualitySummary(BaseModel):
    label: str
    score: float


class SearchHit(BaseModel):
    identifier: str
    title: str
    description: str
    node_id: str
    node_name: str
    access_rights: AccessRights
    number_of_unique_individuals: int | None
    number_of_records: int | None
    min_typical_age: int | None
    max_typical_age: int | None
    modalities: list[str]
    body_parts: list[str]
    keywords: list[str]
    health_categories: list[str]
    quality: QualitySummary


class FacetCount(BaseModel):
    value: str
    label: str
    count: int
    selected: bool


class SearchOut(BaseModel):
    total: int
    page: int
    size: int
    pages: int
    results: list[SearchHit]
    facets: dict[str, list[FacetCount]]


class HarvestNodeStep(BaseModel):
    """One node in a harvest round: waiting, fetching, validated, stored or failed."""

    url: str
    phase: str
    datasets: int = 0
    error: str | None = None
    at: datetime | None = None


class HarvestRound(BaseModel):
    trigger: str
    state: str  # running | finished | failed (a node or the whole round failed)
    started_at: datetime
    finished_at: datetime | None = None
    nodes_total: int
    nodes_done: int
    error: str | None = None
    nodes: list[HarvestNodeStep]


class HarvestedNode(BaseModel):
    """A node as the catalogue holds it: its datasets and when they were last harvested."""

    node_id: str
    node_name: str
    datasets: int
    last_harvested_at: datetime | None


class HarvestStatusOut(BaseModel):
    running: bool
    current: HarvestRound | None = None
    last: HarvestRound | None = None
    nodes: list[HarvestedNode]
    can_start: bool  # this service harvests nodes of its own (SPE_CATALOGUE_NODES)
