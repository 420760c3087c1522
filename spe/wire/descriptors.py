"""A node's dataset descriptor: what the catalogue harvests from `GET /api/v1/descriptors`.

Small counts never travel: a count below the node's threshold is sent as `None` and its
field named in `suppressed` (never as a 0, which would hide the suppression). Per-value
counts (modalities, body parts, manufacturers) are suppressed value by value, named
`"<field>:<value>"`, with complements: enough other counts of the same breakdown are
suppressed beside a small one that the total minus the shown counts is never a small group
(gateway/node/descriptor_disclosure.py). Age and date ranges are trimmed inward so that at
least the threshold of patients lie at or beyond each end, and come in whole `AGE_STEP`
years and whole months.

`disclosure_problems` is what anyone holding a descriptor can check of that: the node runs
it before release and the catalogue before it harvests, so a node that does not protect
its descriptor (an old or a compromised one) is not published.
"""

from __future__ import annotations

import calendar
import math
from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

#: The one collection each node publishes in this first slice of the catalogue.
DEFAULT_COLLECTION = "imaging-and-clinical-records"

#: The FHIR code-system URIs the nodes report, with their names for people.
CODING_SYSTEM_NAMES = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://loinc.org": "LOINC",
}


#: Ages in a descriptor are whole multiples of this many years.
AGE_STEP = 5
#: Completeness shares carry this many decimals.
SHARE_DIGITS = 4

#: The breakdowns of the series total: each series is counted once in each, under its value
#: or, with no value, nowhere (the total minus the listed counts).
SERIES_BREAKDOWNS = ("modalities", "body_parts", "manufacturers")

# Bounds on what a node may publish: the catalogue shows it to everyone, so a node (an old
# or a compromised one) cannot push megabytes into the public pages by harvest. Generous
# beside what the index holds (DICOM LO values are at most 64 characters).
MAX_TEXT = 256
MAX_ITEMS = 1000
#: The most descriptors one node publishes, and the largest answer the harvester reads.
MAX_DESCRIPTORS = 100
MAX_DESCRIPTORS_BYTES = 8 * 1024 * 1024
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]


class ValueCount(BaseModel):
    """A value seen in the index and how often (series), `None` when suppressed (below the
    threshold, or a complement of one that is)."""

    value: Text
    count: int | None


class CodedTerm(BaseModel):
    """A clinical term of the node's records (a SNOMED CT condition, a LOINC observation)
    with its display as the records wrote it, and the patients holding it: listed only when
    they are at least the threshold (free text says as much as a code)."""

    system: Text
    code: Text
    display: Text = ""
    patients: int


class Completeness(BaseModel):
    """Share (0..1) of records carrying a key field; `None` when its base is suppressed or
    when the records with the field or those without it are fewer than the threshold."""

    study_body_part: float | None = None
    study_date: float | None = None
    patient_birth_date: float | None = None
    patient_sex: float | None = None


class DatasetDescriptor(BaseModel):
    # 2: complementary suppression in breakdowns, ranges trimmed to k patients each side.
    # 3: clinical_terms (SNOMED CT and LOINC displays held by at least k patients).
    schema_version: int = 3
    node_id: Text
    node_name: Text
    collection: Text = DEFAULT_COLLECTION
    generated_at: datetime
    suppression_threshold: int = Field(ge=1)

    patients: int | None = None
    studies: int | None = None
    series: int | None = None
    instances: int | None = None
    # Typical age at a study: at least `suppression_threshold` patients were this age or
    # younger (min_age) and this age or older (max_age) at a study; multiples of AGE_STEP.
    min_age: int | None = Field(default=None, ge=0)
    max_age: int | None = Field(default=None, ge=0)
    # The first day of a month on or before which, and the last day of a month on or after
    # which, at least `suppression_threshold` patients had a study.
    temporal_start: date | None = None
    temporal_end: date | None = None
    modalities: list[ValueCount] = Field(default_factory=list, max_length=MAX_ITEMS)
    body_parts: list[ValueCount] = Field(default_factory=list, max_length=MAX_ITEMS)
    manufacturers: list[ValueCount] = Field(default_factory=list, max_length=MAX_ITEMS)
    coding_systems: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)
    # ICD-10 categories (3 characters) with their patient counts; categories held by fewer
    # patients than the threshold are not listed at all (a rare code at a named site says
    # too much), and "conditions:other" in `suppressed` says some were left out.
    conditions: list[ValueCount] = Field(default_factory=list, max_length=MAX_ITEMS)
    # SNOMED CT / LOINC (any system but ICD-10) codes of conditions and observations with
    # their displays, each (system, code, display) held by at least the threshold of
    # patients; "clinical_terms:other" in `suppressed` when some were left out.
    clinical_terms: list[CodedTerm] = Field(default_factory=list, max_length=MAX_ITEMS)
    # Coding systems of the conditions of at least the threshold of patients
    # ("coding_systems:other" in `suppressed` when some were left out).
    completeness: Completeness = Field(default_factory=Completeness)
    suppressed: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)

    @property
    def identifier(self) -> str:
        return f"{self.node_id}/{self.collection}"


def exposed(hidden_sum: int, hidden_values: int, threshold: int) -> bool:
    """Whether the hidden part of a total (the total minus the shown counts: `hidden_sum`
    over `hidden_values` listed values of at least 1 each, and the members with no value)
    tells too much: a small group, or one that splits only one way (each hidden value 1)."""
    return 0 < hidden_sum < threshold or 0 < hidden_sum <= hidden_values


def _share_gives_a_small_count(share: float, base: int, k: int) -> bool:
    """Whether every count that rounds to `share` of `base` leaves 1 to k-1 records on one
    side (the with or the without); at large bases several counts round alike."""
    half = 0.5 * 10 ** -SHARE_DIGITS
    low = max(0, math.ceil((share - half) * base - 1e-9))
    high = min(base, math.floor((share + half) * base + 1e-9))
    return any(1 <= lo and hi <= k - 1 for lo, hi in ((low, high), (base - high, base - low)))


def _month_end(d: date) -> bool:
    return d.day == calendar.monthrange(d.year, d.month)[1]


def disclosure_problems(d: DatasetDescriptor) -> list[str]:
    """Where the descriptor says something about fewer than its threshold of records or
    patients, as far as anyone reading it can tell; empty when nowhere. Each problem names
    the place and the rule, never a value."""
    k = d.suppression_threshold
    out: list[str] = []
    for name in ("patients", "studies", "series", "instances"):
        n = getattr(d, name)
        if n is not None and n < k:
            out.append(f"{name}: a count below {k} shown")
    for field in SERIES_BREAKDOWNS:
        cells: list[ValueCount] = getattr(d, field)
        shown = [c.count for c in cells if c.count is not None]
        hidden = len(cells) - len(shown)
        if any(n < k for n in shown):
            out.append(f"{field}: a count below {k} shown")
        if d.series is None:
            if shown:
                out.append(f"{field}: counts shown beside a suppressed total")
            continue
        rest = d.series - sum(shown)  # hidden counts plus series with no value
        if rest < 0:
            out.append(f"{field}: shown counts exceed the total")
        elif exposed(rest, hidden, k):
            out.append(f"{field}: the total minus the shown counts singles out fewer than "
                       f"{k} series")
    bases = {"study_body_part": d.studies, "study_date": d.studies,
             "patient_birth_date": d.patients, "patient_sex": d.patients}
    for name, base in bases.items():
        share = getattr(d.completeness, name)
        if share is None:
            continue
        if base is None:
            out.append(f"completeness.{name}: a share of a suppressed total")
            continue
        if _share_gives_a_small_count(share, base, k):
            out.append(f"completeness.{name}: a share that gives a count below {k}")
    if any(c.count is None or c.count < k for c in d.conditions):
        out.append(f"conditions: a category of fewer than {k} patients listed")
    if any(t.patients < k for t in d.clinical_terms):
        out.append(f"clinical_terms: a term of fewer than {k} patients listed")
    for name in ("min_age", "max_age"):
        age = getattr(d, name)
        if age is not None and age % AGE_STEP:
            out.append(f"{name}: not a multiple of {AGE_STEP} years")
    if d.min_age is not None and d.max_age is not None and d.min_age > d.max_age:
        out.append("min_age: above max_age")
    if d.temporal_start is not None and d.temporal_start.day != 1:
        out.append("temporal_start: not the first day of a month")
    if d.temporal_end is not None and not _month_end(d.temporal_end):
        out.append("temporal_end: not the last day of a month")
    if d.temporal_start and d.temporal_end and d.temporal_start > d.temporal_end:
        out.append("temporal_start: after temporal_end")
    return out


__all__ = [
    "AGE_STEP",
    "CODING_SYSTEM_NAMES",
    "DEFAULT_COLLECTION",
    "CodedTerm",
    "Completeness",
    "DatasetDescriptor",
    "SERIES_BREAKDOWNS",
    "SHARE_DIGITS",
    "ValueCount",
    "disclosure_problems",
    "exposed",
]
