"""The federated query: what a researcher asks, what the hub sends to the nodes, and what
the nodes answer. Shared by the hub (gateway.hub) and the nodes (gateway.node.query) as
data, never as code paths (ARCHITECTURE: they share the wire format only).

A query is a tree of `and` / `or` / `not` over criteria on the patient, their conditions,
observations and imaging, plus the answer asked for. Everything is validated here with
limits on size and depth, so a node never compiles an unbounded tree.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_DEPTH = 6
MAX_CRITERIA = 40
MAX_LIST = 20

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9.\-_]+$")]
Token = Annotated[str, Field(min_length=1, max_length=64)]

#: Code systems by the short names a query may use, and the FHIR URIs they cover in the
#: index (ICD-10 as WHO publishes it and its US clinical modification alike).
CODE_SYSTEMS = {
    "icd-10": ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm"),
    "snomed": ("http://snomed.info/sct",),
    "loinc": ("http://loinc.org",),
}
#: Age bands for stratification: [low, high] in completed years, inclusive.
AGE_BANDS = {"0-17": (0, 17), "18-39": (18, 39), "40-64": (40, 64), "65+": (65, 200)}
Stratum = Literal["sex", "age_band", "modality", "site"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgeRange(_Strict):
    """Age in completed years, at a given date or at each of the patient's studies."""

    min: int | None = Field(default=None, ge=0, le=150)
    max: int | None = Field(default=None, ge=0, le=150)
    at: date | Literal["study"] = "study"

    @model_validator(mode="after")
    def _ordered(self) -> AgeRange:
        if self.min is None and self.max is None:
            raise ValueError("an age range needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"age min ({self.min}) is above max ({self.max})")
        return self


class PatientCriterion(_Strict):
    type: Literal["patient"]
    sex: Literal["female", "male", "other", "unknown"] | None = None
    age: AgeRange | None = None

    @model_validator(mode="after")
    def _something(self) -> PatientCriterion:
        if self.sex is None and self.age is None:
            raise ValueError("a patient criterion needs sex or age")
        return self


class ConditionCriterion(_Strict):
    """A patient with a condition coded so; `prefix` matches ICD-10 categories and chapters
    ("C71" matches C71.9)."""

    type: Literal["condition"]
    system: Literal["icd-10", "snomed"]
    code: Code
    prefix: bool = False


class ObservationCriterion(_Strict):
    type: Literal["observation"]
    system: Literal["loinc"] = "loinc"
    code: Code
    min: float | None = None
    max: float | None = None
    unit: Token | None = None  # UCUM, compared as written in the index

    @model_validator(mode="after")
    def _ordered(self) -> ObservationCriterion:
        if (self.min is not None or self.max is not None) and self.unit is None:
            raise ValueError("an observation range needs its unit (UCUM, e.g. \"kg\"): "
                             "values in other units are not comparable")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"observation min ({self.min}) is above max ({self.max})")
        return self


class ImagingCriterion(_Strict):
    """A patient with at least one series matching every given field."""

    type: Literal["imaging"]
    modality: list[Token] = Field(default_factory=list, max_length=MAX_LIST)
    body_part: list[Token] = Field(default_factory=list, max_length=MAX_LIST)
    manufacturer: Token | None = None
    study_from: date | None = None
    study_to: date | None = None

    @model_validator(mode="after")
    def _something(self) -> ImagingCriterion:
        if not (self.modality or self.body_part or self.manufacturer or self.study_from
                or self.study_to):
            raise ValueError("an imaging criterion needs modality, body_part, manufacturer "
                             "or a study date")
        if self.study_from and self.study_to and self.study_from > self.study_to:
            raise ValueError("study_from is after study_to")
        return self


class And(_Strict):
    type: Literal["and"]
    of: list[Criterion] = Field(min_length=1, max_length=MAX_LIST)


class Or(_Strict):
    type: Literal["or"]
    of: list[Criterion] = Field(min_length=1, max_length=MAX_LIST)


class Not(_Strict):
    type: Literal["not"]
    of: Criterion


Criterion = Annotated[
    PatientCriterion | ConditionCriterion | ObservationCriterion | ImagingCriterion
    | And | Or | Not,
    Field(discriminator="type"),
]
for _model in (And, Or, Not):
    _model.model_rebuild()


class Answer(_Strict):
    kind: Literal["boolean", "count", "stratified"] = "count"
    by: list[Stratum] = Field(default_factory=list, max_length=2)

    @model_validator(mode="after")
    def _strata(self) -> Answer:
        if self.kind == "stratified" and not self.by:
            raise ValueError("a stratified answer needs `by` (one or two of sex, age_band, "
                             "modality, site)")
        if self.kind != "stratified" and self.by:
            raise ValueError("`by` is only for a stratified answer")
        if len(set(self.by)) != len(self.by):
            raise ValueError("`by` names a stratum twice")
        return self


def _walk(c, depth: int = 1):
    yield c, depth
    children = c.of if isinstance(c, And | Or) else [c.of] if isinstance(c, Not) else []
    for child in children:
        yield from _walk(child, depth + 1)


class Query(_Strict):
    """`where` selects patients; `answer` says what comes back about them."""

    where: Criterion
    answer: Answer = Field(default_factory=Answer)

    @model_validator(mode="after")
    def _bounded(self) -> Query:
        nodes = list(_walk(self.where))
        if len(nodes) > MAX_CRITERIA:
            raise ValueError(f"the query has {len(nodes)} criteria; at most {MAX_CRITERIA}")
        depth = max(d for _, d in nodes)
        if depth > MAX_DEPTH:
            raise ValueError(f"the query is nested {depth} deep; at most {MAX_DEPTH}")
        return self

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: what the audit logs and the hub's context name."""
        canonical = json.dumps(self.model_dump(mode="json", exclude_defaults=False),
                               sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# ---- what a node answers ----------------------------------------------------------------

class Cell(BaseModel):
    """One count. `suppressed` marks a count under the threshold: `value` is then None,
    never 0 and never exact. Shown values are rounded to `rounding`.

    In the statistics tier a shown value is `perturbed` (the cell-key method): the count
    plus a noise of at most `max_noise` either way and standard deviation at most `sd`, the
    same for the same set of patients however asked. `reason` says why a value is
    suppressed or perturbed, in words a researcher can act on."""

    key: dict[str, str] = Field(default_factory=dict)  # stratum -> value; {} for the total
    value: int | None
    suppressed: bool = False
    perturbed: bool = False
    reason: str | None = None
    max_noise: int | None = None
    sd: float | None = None


class NodeAnswer(BaseModel):
    node_id: str
    tier: str
    kind: Literal["boolean", "count", "stratified"]
    exists: bool | None = None  # boolean answers
    total: Cell | None = None
    cells: list[Cell] = Field(default_factory=list)
    threshold: int
    rounding: int
    notes: list[str] = Field(default_factory=list)  # e.g. why an answer was suppressed


__all__ = [
    "AGE_BANDS", "CODE_SYSTEMS", "MAX_CRITERIA", "MAX_DEPTH", "AgeRange", "And", "Answer",
    "Cell", "ConditionCriterion", "Criterion", "ImagingCriterion", "NodeAnswer", "Not",
    "ObservationCriterion", "Or", "PatientCriterion", "Query", "Stratum",
]
