"""The part of the EHDS Art. 78 data quality and utility label that metadata and harvested
metrics can show, computed on read (never stored, so it follows every harvest).

Art. 78(3) names the label's elements: data documentation, technical quality (completeness,
accuracy, consistency), quality management, coverage, information on access, and
enrichment. Quality management needs an assessment by people and is not scored here. Each
dimension scores 0..1 from checks whose notes say what is missing; the label is the mean,
in four tiers (bronze < 0.5 <= silver < 0.7 <= gold < 0.85 <= platinum), the tier names
of the TEHDAS quality-label proposal, and at most one tier above the weakest dimension's:
a strong dataset with poor documentation is not platinum.
"""

from __future__ import annotations

from collections.abc import Callable

from catalogue.models import Dataset
from catalogue.schemas import QualityDimension, QualityLabel
from spe.wire.descriptors import CODING_SYSTEM_NAMES

TIERS = ((0.85, "platinum"), (0.7, "gold"), (0.5, "silver"), (0.0, "bronze"))
#: Enough individuals for most statistical uses of a dataset.
WELL_POPULATED = 100
PLACEHOLDER_DOMAIN = ".invalid"


def _dimension(name: str, checks: list[tuple[bool, str]]) -> QualityDimension:
    """A score from (passed, note) checks; the notes say what failed."""
    passed = sum(ok for ok, _ in checks)
    return QualityDimension(name=name, score=round(passed / len(checks), 3),
                            notes=[note for ok, note in checks if not ok])


def documentation(d: Dataset) -> QualityDimension:
    return _dimension("documentation", [
        (d.curated_at is not None, "title and description not yet curated by the institution"),
        (len(d.description) >= 200, "description shorter than 200 characters"),
        (len(d.keywords) >= 3, "fewer than 3 keywords"),
        (not d.contact_email.endswith(PLACEHOLDER_DOMAIN), "no real contact point"),
        (bool(d.health_categories), "no health category"),
    ])


def technical_quality(d: Dataset) -> QualityDimension:
    shares = {k: v for k, v in (d.completeness or {}).items() if v is not None}
    if not shares:
        return QualityDimension(name="technical_quality", score=0.0,
                                notes=["completeness of key fields unknown (suppressed)"])
    score = sum(shares.values()) / len(shares)
    notes = [f"{k.replace('_', ' ')} filled in {v:.0%} of records"
             for k, v in sorted(shares.items()) if v < 0.95]
    return QualityDimension(name="technical_quality", score=round(score, 3), notes=notes)


def coverage(d: Dataset) -> QualityDimension:
    span_days = ((d.temporal_end - d.temporal_start).days
                 if d.temporal_start and d.temporal_end else 0)
    individuals = d.number_of_unique_individuals or 0
    return _dimension("coverage", [
        (individuals >= WELL_POPULATED, f"fewer than {WELL_POPULATED} individuals (or suppressed)"),
        (d.min_typical_age is not None, "age range unknown (or suppressed)"),
        (span_days >= 365, "temporal coverage under a year (or unknown)"),
        (bool(d.modalities) and bool(d.conditions), "imaging or clinical coverage missing"),
    ])


def access(d: Dataset) -> QualityDimension:
    return _dimension("access", [
        (bool(d.access_rights), "access rights not stated"),
        (bool(d.legal_bases), "no legal basis stated"),
        (bool(d.purposes), "no purpose stated"),
        (bool(d.applicable_legislation), "applicable legislation not stated"),
        (not d.hdab_email.endswith(PLACEHOLDER_DOMAIN), "no real contact at the access body"),
    ])


def enrichment(d: Dataset) -> QualityDimension:
    standard = [s for s in d.coding_systems if s in CODING_SYSTEM_NAMES]
    return _dimension("enrichment", [
        (bool(standard), "no standard coding system (SNOMED CT, ICD-10, LOINC)"),
        (len(standard) >= 2, "a single coding system"),
        (bool(d.body_parts), "no body part on the imaging series"),
        (bool(d.manufacturers), "no device metadata"),
    ])


DIMENSIONS: tuple[Callable[[Dataset], QualityDimension], ...] = (
    documentation, technical_quality, coverage, access, enrichment)


def _tier(score: float) -> int:
    """0 for platinum ... 3 for bronze."""
    return next(i for i, (floor, _) in enumerate(TIERS) if score >= floor)


def quality_label(d: Dataset) -> QualityLabel:
    dimensions = [score(d) for score in DIMENSIONS]
    total = round(sum(x.score for x in dimensions) / len(dimensions), 3)
    weakest = _tier(min(x.score for x in dimensions))
    tier = max(_tier(total), weakest - 1)
    return QualityLabel(label=TIERS[tier][1], score=total, dimensions=dimensions)


__all__ = ["DIMENSIONS", "quality_label"]
