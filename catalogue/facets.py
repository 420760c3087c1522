"""What a dataset is found by: its facet values and its full-text document.

Both are derived from the dataset's columns and rebuilt on every change
(`catalogue.repository.reindex`), so search never reads the JSON columns themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from catalogue import concepts, icd10, vocabulary
from catalogue.models import Dataset
from spe.wire.descriptors import CODING_SYSTEM_NAMES

#: Facet names, in the order the UI shows them; also the search's filter parameters.
FACETS = ("health_category", "clinical_area", "modality", "body_part", "institution",
          "access_rights", "age_band", "condition")

#: Age bands a dataset's [min, max] typical age overlaps (inclusive bounds, years).
AGE_BANDS = {"0-17": (0, 17), "18-39": (18, 39), "40-64": (40, 64), "65+": (65, 200)}


@dataclass(frozen=True)
class SearchDocument:
    """The three weighted parts of a dataset's full text: title > keywords > body."""

    title: str
    keywords: str
    body: str


def _values(items: list[dict]) -> list[str]:
    return sorted({item["value"] for item in items if item.get("value")})


def overlapping_bands(min_age: int | None, max_age: int | None) -> list[str]:
    if min_age is None or max_age is None:
        return []
    return [band for band, (lo, hi) in AGE_BANDS.items() if min_age <= hi and max_age >= lo]


def facet_values(d: Dataset) -> list[tuple[str, str]]:
    """Every (facet, value) pair of a dataset, without duplicates."""
    pairs = {("institution", d.node_id), ("access_rights", d.access_rights)}
    pairs |= {("health_category", iri) for iri in d.health_categories}
    pairs |= {("modality", v) for v in _values(d.modalities)}
    pairs |= {("body_part", v) for v in _values(d.body_parts)}
    pairs |= {("condition", v) for v in _values(d.conditions)}
    pairs |= {("clinical_area", key) for v in _values(d.conditions) for key in _area_keys(v)}
    pairs |= {("age_band", band) for band in overlapping_bands(d.min_typical_age,
                                                                 d.max_typical_age)}
    return sorted(pairs)


# A code's words and areas never change (they come from the tables in catalogue.concepts
# and catalogue.icd10), while a harvest asks for the same few codes thousands of times.
@lru_cache(maxsize=4096)
def _area_keys(code: str) -> tuple[str, ...]:
    return tuple(area.key for area in concepts.areas_of(code))


@lru_cache(maxsize=4096)
def _modality_words(code: str) -> tuple[str, ...]:
    return tuple(concepts.modality_words(code))


@lru_cache(maxsize=4096)
def _body_part_words(code: str) -> tuple[str, ...]:
    return tuple(concepts.body_part_words(code))


@lru_cache(maxsize=4096)
def _condition_words(code: str) -> tuple[str, ...]:
    return tuple(concepts.condition_words(code))


def concept_words(d: Dataset) -> list[str]:
    """What people type for the codes a dataset holds: modality and body-part names and
    synonyms, ICD-10 titles up to their chapters with their clinical areas, and the
    SNOMED CT / LOINC displays the node published (catalogue.concepts)."""
    words: list[str] = []
    for v in _values(d.modalities):
        words += _modality_words(v)
    for v in _values(d.body_parts):
        words += _body_part_words(v)
    for v in _values(d.conditions):
        words += _condition_words(v)
    for term in d.clinical_terms or []:
        words += [term.get("display") or "", term.get("code") or ""]
    return list(dict.fromkeys(w for w in words if w))


def search_document(d: Dataset) -> SearchDocument:
    body = [d.description, d.node_name, d.publisher_name,
            *(vocabulary.label_of(iri) for iri in d.health_categories),
            *_values(d.manufacturers), *concept_words(d),
            *(CODING_SYSTEM_NAMES.get(s, s) for s in d.coding_systems)]
    return SearchDocument(title=d.title, keywords=" ".join(d.keywords),
                          body=" ".join(part for part in body if part))


def facet_label(facet: str, value: str, institutions: dict[str, str]) -> str:
    """How the UI names a facet value."""
    if facet == "health_category":
        return vocabulary.label_of(value)
    if facet == "institution":
        return institutions.get(value, value)
    if facet == "access_rights":
        return value.replace("_", " ").capitalize()
    if facet == "condition":
        return icd10.label(value)
    if facet == "clinical_area":
        return concepts.area_label(value)
    if facet == "modality":
        return concepts.modality_label(value)
    if facet == "body_part":
        return concepts.body_part_label(value)
    if facet == "age_band":
        return f"{value} years"
    return value


__all__ = ["AGE_BANDS", "FACETS", "SearchDocument", "concept_words", "facet_label",
           "facet_values", "overlapping_bands", "search_document"]
