"""Synthetic sites shaped like a catalogue's dataset descriptors (for `spe job test`).

A researcher tries a job on dummy data before sending it: one synthetic site per
institution of the permit, made to look like what the catalogue publishes of that
institution's dataset (`gateway/node/descriptors.py`, harvested into the catalogue):

- ages: the descriptor's typical age range (`min_typical_age`..`max_typical_age`);
- conditions: each ICD-10 category it lists gets the share of patients it states (a
  category it does not list held fewer than the threshold of patients, or none: such a
  condition stays rare);
- scanners: the fleet's vendors weighted by the series per manufacturer it lists;
- modalities and body parts follow from the conditions and the fleet, as at a real site
  (the synthetic exams are driven by diagnoses), so they are reported, not forced.

Only public-tier figures are used (suppressed counts are `None`), so nothing here needs a
permit, and the dummy data say nothing about a real patient.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field
from typing import Any

from spe.synth.codes import CONDITIONS
from spe.synth.scanners import CATALOGUE, FLEET_SIZE, VENDORS, make_fleet
from spe.synth.sites import TEMPLATES, Site, make_site, prevalence_table

#: A site id is a folder name and part of the MRN system (`urn:spe:<site>:mrn`).
_SITE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
#: The share of patients given to a listed condition whose count is suppressed: listed
#: means at least the threshold held it, so more than a rare one.
LISTED_SHARE = 0.15
#: Conditions the descriptor does not list are kept rare (fewer than the threshold held them).
UNLISTED_FACTOR = 0.25
_VENDOR_OF = {manufacturer.lower(): vendor for vendor, manufacturer in VENDORS.items()}


class ShapeError(ValueError):
    """A descriptor that cannot shape a site (not an object, no node id, ...)."""


@dataclass(frozen=True)
class SiteShape:
    """What one institution's dataset looks like, from its catalogue descriptor."""

    site: str
    patients: int | None = None
    min_age: int | None = None
    max_age: int | None = None
    modalities: dict[str, int | None] = field(default_factory=dict)
    body_parts: dict[str, int | None] = field(default_factory=dict)
    manufacturers: dict[str, int | None] = field(default_factory=dict)
    conditions: dict[str, int | None] = field(default_factory=dict)  # ICD-10 categories

    @classmethod
    def from_descriptor(cls, data: Any, site: str | None = None) -> SiteShape:
        """From the catalogue's dataset JSON (`GET /api/v1/catalogue/datasets/{id}`) or a
        node's descriptor (`GET /api/v1/descriptors`): both name the same figures."""
        if not isinstance(data, dict):
            raise ShapeError("a dataset descriptor is a JSON object")
        site = site or data.get("node_id")
        if not isinstance(site, str) or not _SITE_ID.fullmatch(site):
            raise ShapeError(f"the descriptor names no usable institution id: {site!r}")

        def first(*keys: str) -> int | None:
            for key in keys:
                value = data.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    return value
            return None

        return cls(site=site,
                   patients=first("number_of_unique_individuals", "patients"),
                   min_age=first("min_typical_age", "min_age"),
                   max_age=first("max_typical_age", "max_age"),
                   modalities=_counts(data.get("modalities")),
                   body_parts=_counts(data.get("body_parts")),
                   manufacturers=_counts(data.get("manufacturers")),
                   conditions=_counts(data.get("conditions")))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _counts(items: Any) -> dict[str, int | None]:
    """`[{"value", "count"}]` as {value: count}; malformed items are left out."""
    out: dict[str, int | None] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("value"), str) and item["value"]:
            count = item.get("count")
            out[item["value"]] = count if isinstance(count, int) and count >= 0 else None
    return out


def _vendor_weights(shape: SiteShape, default: dict[str, float]) -> dict[str, float]:
    """Vendors weighted by the series the descriptor counts per manufacturer; a kind of
    scanner none of them builds keeps the template's vendors, lightly (a fleet needs one)."""
    weights: dict[str, float] = {}
    for manufacturer, count in shape.manufacturers.items():
        vendor = _VENDOR_OF.get(manufacturer.strip().lower())
        if vendor is not None:
            weights[vendor] = weights.get(vendor, 0.0) + float(count if count else 1)
    if not weights:
        return dict(default)
    total = sum(weights.values())
    weights = {v: w / total for v, w in weights.items()}
    for kind in FLEET_SIZE:
        if not any(kind in CATALOGUE[v] for v in weights):
            for vendor, w in default.items():
                if kind in CATALOGUE[vendor]:
                    weights[vendor] = weights.get(vendor, 0.0) + 0.01 * w
    return weights


def _prevalence(shape: SiteShape, base: dict[str, float]) -> dict[str, float]:
    """Per condition key, the share of patients the descriptor gives its ICD-10 category."""
    out: dict[str, float] = {}
    for condition in CONDITIONS:
        category = condition.icd10.code[:3].upper()
        if category in shape.conditions:
            count = shape.conditions[category]
            share = count / shape.patients if count and shape.patients else LISTED_SHARE
            out[condition.key] = min(0.9, max(share, 0.01))
        elif shape.conditions:  # the descriptor lists some: this one is rare there
            out[condition.key] = base[condition.key] * UNLISTED_FACTOR
        else:  # it lists none (all suppressed, or no records): the template's
            out[condition.key] = base[condition.key]
    return out


def shaped_site(index: int, seed: int, shape: SiteShape) -> Site:
    """Synthetic site number `index`, named as the institution, shaped like `shape`."""
    plain = make_site(index, seed)
    template = dataclasses.replace(
        plain.template, vendors=_vendor_weights(shape, plain.template.vendors))
    fleet = make_fleet(random.Random(f"{seed}:{shape.site}:fleet"), plain.code,
                       template.vendors)
    ages = None
    if shape.min_age is not None and shape.max_age is not None \
            and 0 <= shape.min_age <= shape.max_age:
        ages = (max(shape.min_age, 18), max(shape.max_age, 18))  # adults: the exams assume
    prevalence = _prevalence(shape, prevalence_table(plain.template.profile))
    return dataclasses.replace(plain, id=shape.site, template=template, fleet=fleet,
                               ages=ages, prevalence_override=tuple(sorted(prevalence.items())))


def shaped_sites(shapes: list[SiteShape], seed: int = 1) -> list[Site]:
    if len(shapes) > len(TEMPLATES) * 3:
        raise ShapeError(f"at most {len(TEMPLATES) * 3} institutions")
    if len({s.site for s in shapes}) != len(shapes):
        raise ShapeError("an institution is named twice")
    return [shaped_site(i, seed, shape) for i, shape in enumerate(shapes)]


__all__ = ["ShapeError", "SiteShape", "shaped_site", "shaped_sites"]
