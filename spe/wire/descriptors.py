"""A node's dataset descriptor: what the catalogue harvests from `GET /api/v1/descriptors`.

Small counts never travel: a count below the node's threshold is sent as `None` and its
field named in `suppressed` (never as a 0, which would hide the suppression). Per-value
counts (modalities, body parts, manufacturers) are suppressed value by value, named
`"<field>:<value>"`.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

#: The one collection each node publishes in this first slice of the catalogue.
DEFAULT_COLLECTION = "imaging-and-clinical-records"

#: The FHIR code-system URIs the nodes report, with their names for people.
CODING_SYSTEM_NAMES = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://loinc.org": "LOINC",
}


class ValueCount(BaseModel):
    """A value seen in the index and how often (series), `None` when below the threshold."""

    value: str
    count: int | None


class Completeness(BaseModel):
    """Share (0..1) of records carrying a key field; `None` when its base is suppressed."""

    study_body_part: float | None = None
    study_date: float | None = None
    patient_birth_date: float | None = None
    patient_sex: float | None = None


class DatasetDescriptor(BaseModel):
    schema_version: int = 1
    node_id: str
    node_name: str
    collection: str = DEFAULT_COLLECTION
    generated_at: datetime
    suppression_threshold: int = Field(ge=1)

    patients: int | None = None
    studies: int | None = None
    series: int | None = None
    instances: int | None = None
    min_age: int | None = Field(default=None, ge=0)
    max_age: int | None = Field(default=None, ge=0)
    temporal_start: date | None = None
    temporal_end: date | None = None
    modalities: list[ValueCount] = Field(default_factory=list)
    body_parts: list[ValueCount] = Field(default_factory=list)
    manufacturers: list[ValueCount] = Field(default_factory=list)
    coding_systems: list[str] = Field(default_factory=list)
    # ICD-10 categories (3 characters) with their patient counts; categories held by fewer
    # patients than the threshold are not listed at all (a rare code at a named site says
    # too much), and "conditions:other" in `suppressed` says some were left out.
    conditions: list[ValueCount] = Field(default_factory=list)
    completeness: Completeness = Field(default_factory=Completeness)
    suppressed: list[str] = Field(default_factory=list)

    @property
    def identifier(self) -> str:
        return f"{self.node_id}/{self.collection}"


__all__ = [
    "CODING_SYSTEM_NAMES",
    "DEFAULT_COLLECTION",
    "Completeness",
    "DatasetDescriptor",
    "ValueCount",
]
