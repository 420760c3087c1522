"""REFERENCE ONLY: the catalogue's per-dataset harvest as it was before bulk writes
(issue 22), kept verbatim as the baseline that `benchmarks/catalogue_load.py` times in the
same run and that `tests/catalogue/test_bulk_harvest.py` holds the bulk harvest to (same
rows, facets, search text and audit entries). Nothing in the services calls it; use
`catalogue.service.harvest`.

Its facet and search-text derivation (`catalogue.facets` before its per-code caches) is
copied here too, so that the baseline costs what it did.

Per descriptor: a SELECT for the existing row, an ORM add and flush, the revision bumped,
the facet rows deleted and inserted, the search text upserted, three audit statements:
about a dozen round trips per dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.orm import Session

from catalogue import concepts, vocabulary
from catalogue.facets import SearchDocument, overlapping_bands
from catalogue.models import CatalogueRevision, Dataset, DatasetFacet
from catalogue.service import _default_curation, _harvested
from spe.audit import CENTRAL_AUDIT, AuditLog
from spe.wire.descriptors import CODING_SYSTEM_NAMES, DatasetDescriptor


def _values(items: list[dict]) -> list[str]:
    return sorted({item["value"] for item in items if item.get("value")})


def facet_values(d: Dataset) -> list[tuple[str, str]]:
    pairs = {("institution", d.node_id), ("access_rights", d.access_rights)}
    pairs |= {("health_category", iri) for iri in d.health_categories}
    pairs |= {("modality", v) for v in _values(d.modalities)}
    pairs |= {("body_part", v) for v in _values(d.body_parts)}
    pairs |= {("condition", v) for v in _values(d.conditions)}
    pairs |= {("clinical_area", area.key) for v in _values(d.conditions)
              for area in concepts.areas_of(v)}
    pairs |= {("age_band", band) for band in overlapping_bands(d.min_typical_age,
                                                                 d.max_typical_age)}
    return sorted(pairs)


def concept_words(d: Dataset) -> list[str]:
    words: list[str] = []
    for v in _values(d.modalities):
        words += concepts.modality_words(v)
    for v in _values(d.body_parts):
        words += concepts.body_part_words(v)
    for v in _values(d.conditions):
        words += concepts.condition_words(v)
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


def _bump_revision(session: Session) -> None:
    session.execute(update(CatalogueRevision).where(CatalogueRevision.id == 1)
                    .values(revision=CatalogueRevision.revision + 1))


def _reindex(session: Session, dataset: Dataset) -> None:
    _bump_revision(session)
    session.execute(delete(DatasetFacet).where(DatasetFacet.dataset_id == dataset.id))
    rows = [{"dataset_id": dataset.id, "facet": f, "value": v[:300]}
            for f, v in facet_values(dataset)]
    if rows:
        session.execute(insert(DatasetFacet), rows)
    doc = search_document(dataset)
    values = {"id": dataset.id, "title": doc.title, "keywords": doc.keywords, "body": doc.body}
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(
            "INSERT INTO catalogue_text (dataset_id, search_vector) VALUES (:id, "
            "setweight(to_tsvector('english', :title), 'A') || "
            "setweight(to_tsvector('english', :keywords), 'B') || "
            "setweight(to_tsvector('english', :body), 'C')) "
            "ON CONFLICT (dataset_id) DO UPDATE SET search_vector = EXCLUDED.search_vector"),
            values)
    else:
        session.execute(text("DELETE FROM catalogue_fts WHERE rowid = :id"), {"id": dataset.id})
        session.execute(text("INSERT INTO catalogue_fts (rowid, title, keywords, body) "
                             "VALUES (:id, :title, :keywords, :body)"), values)


def harvest_per_row(
    session: Session,
    descriptors: Iterable[DatasetDescriptor | dict[str, Any]],
    *,
    actor: str = "system",
    audit: AuditLog = CENTRAL_AUDIT,
) -> list[tuple[Dataset, bool]]:
    """Today's `catalogue.service.harvest` before issue 22, one dataset at a time."""
    now = datetime.now(UTC)
    out = []
    for raw in descriptors:
        d = raw if isinstance(raw, DatasetDescriptor) else DatasetDescriptor.model_validate(raw)
        dataset = session.execute(
            select(Dataset).where(Dataset.identifier == d.identifier)).scalar_one_or_none()
        created = dataset is None
        if dataset is None:
            dataset = Dataset(identifier=d.identifier, node_id=d.node_id,
                              collection=d.collection, **_default_curation(d))
        for key, value in _harvested(d, now).items():
            setattr(dataset, key, value)
        if created:
            session.add(dataset)
            session.flush()
        session.flush()
        _reindex(session, dataset)
        audit.record(
            session, actor=actor, action="catalogue.harvest", object=d.identifier,
            decision="info", reason="created" if created else "updated",
            details={"node": d.node_id, "patients": d.patients, "studies": d.studies,
                     "suppressed": d.suppressed},
        )
        out.append((dataset, created))
    return out


__all__ = ["harvest_per_row"]
