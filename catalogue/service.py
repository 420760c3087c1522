"""Catalogue logic: harvest node descriptors, curate datasets. Callers own the transaction;
every change is audited in it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from catalogue import concepts, icd10, repository, vocabulary
from catalogue import search as catalogue_search
from catalogue.facets import facet_label
from catalogue.models import Dataset
from catalogue.quality import quality_label
from catalogue.schemas import (
    CurationIn,
    DatasetOut,
    FacetCount,
    QualitySummary,
    SearchHit,
    SearchOut,
    SearchParams,
)
from spe.audit import CENTRAL_AUDIT, AuditLog
from spe.errors import Forbidden, NotFound, SPEError
from spe.identity import Principal
from spe.policy import PolicyService
from spe.policy.gate import decide_or_refuse
from spe.wire.descriptors import DatasetDescriptor

#: How much of a description a search hit carries.
SNIPPET_LENGTH = 300


class CatalogueError(SPEError):
    """A catalogue operation that could not be done (e.g. a node could not be harvested)."""

    status_code = 502
    error = "catalogue_error"


class DatasetNotFound(NotFound):
    pass


class CurationRefused(Forbidden):
    pass


def _default_curation(d: DatasetDescriptor) -> dict[str, Any]:
    return {
        "title": f"Imaging and clinical records of {d.node_name}",
        "description": (
            f"DICOM imaging studies and HL7 FHIR clinical records (conditions, observations) "
            f"held by {d.node_name} and indexed by its secure processing node. Records stay at "
            f"the institution; access needs a data permit from the health data access body. "
            f"Counts below {d.suppression_threshold} are suppressed."
        ),
        "keywords": list(vocabulary.DEFAULT_KEYWORDS),
        "health_categories": [vocabulary.HEALTH_CATEGORY_EHR,
                              vocabulary.HEALTH_CATEGORY_IMAGING],
        "themes": [vocabulary.DATA_THEME_HEALTH],
        "dataset_type": vocabulary.DCMI_DATASET,
        "publisher_name": d.node_name,
        "publisher_email": vocabulary.default_contact_email(d.node_id),
        "contact_email": vocabulary.default_contact_email(d.node_id),
        "hdab_name": vocabulary.DEFAULT_HDAB_NAME,
        "hdab_email": vocabulary.DEFAULT_HDAB_EMAIL,
        "purposes": [vocabulary.DPV_RESEARCH],
        "legal_bases": [vocabulary.GDPR_A9_2_J],
        "access_rights": "NON_PUBLIC",
        "population_coverage": "",
        "applicable_legislation": [vocabulary.EHDS_REGULATION],
    }


#: The columns every harvest replaces from the node's descriptor.
HARVESTED = ("node_name", "number_of_records", "number_of_unique_individuals",
             "number_of_series", "number_of_instances", "min_typical_age", "max_typical_age",
             "temporal_start", "temporal_end", "modalities", "body_parts", "manufacturers",
             "coding_systems", "conditions", "clinical_terms", "completeness", "suppressed",
             "suppression_threshold", "harvested_at")


def _harvested(d: DatasetDescriptor, at: datetime) -> dict[str, Any]:
    return {
        "node_name": d.node_name,
        "number_of_records": d.studies,
        "number_of_unique_individuals": d.patients,
        "number_of_series": d.series,
        "number_of_instances": d.instances,
        "min_typical_age": d.min_age,
        "max_typical_age": d.max_age,
        "temporal_start": d.temporal_start,
        "temporal_end": d.temporal_end,
        "modalities": [v.model_dump() for v in d.modalities],
        "body_parts": [v.model_dump() for v in d.body_parts],
        "manufacturers": [v.model_dump() for v in d.manufacturers],
        "coding_systems": list(d.coding_systems),
        "conditions": [v.model_dump() for v in d.conditions],
        "clinical_terms": [t.model_dump() for t in d.clinical_terms],
        "completeness": d.completeness.model_dump(),
        "suppressed": list(d.suppressed),
        "suppression_threshold": d.suppression_threshold,
        "harvested_at": at,
    }


@dataclass(frozen=True)
class Harvested:
    """What a harvest did to one descriptor's dataset."""

    identifier: str
    created: bool


#: The columns a harvest writes on a new dataset; an existing one keeps all but the
#: harvested ones (HARVESTED), which every harvest replaces.
_IDENTITY = ("identifier", "node_id", "collection")


def harvest(
    session: Session,
    descriptors: Iterable[DatasetDescriptor | dict[str, Any]],
    *,
    actor: str = "system",
    audit: AuditLog = CENTRAL_AUDIT,
) -> list[Harvested]:
    """Upsert one dataset per descriptor: harvested fields replaced, curated ones kept.

    Returns what happened to each descriptor's dataset, in order. Each upsert is audited in
    the caller's transaction. The writes are in bulk, a fixed number of statements for the
    whole list: the existing rows read once, one upsert (executemany), the facet rows and
    search text rebuilt together, the audit entries chained in one insert.
    """
    now = datetime.now(UTC)
    parsed = [raw if isinstance(raw, DatasetDescriptor) else DatasetDescriptor.model_validate(raw)
              for raw in descriptors]
    if not parsed:
        return []
    session.flush()  # pending ORM changes go first: what follows are Core statements
    stored = repository.existing_rows(session, [d.identifier for d in parsed])
    rows: dict[str, dict[str, Any]] = {}  # identifier -> its row as this harvest leaves it
    out: list[Harvested] = []
    entries: list[dict[str, Any]] = []
    for d in parsed:
        # A descriptor repeated in one list updates the row its first occurrence made.
        base = rows.get(d.identifier) or stored.get(d.identifier)
        created = base is None
        if base is None:
            base = {"identifier": d.identifier, "node_id": d.node_id,
                    "collection": d.collection, **_default_curation(d)}
        rows[d.identifier] = {**base, **_harvested(d, now)}
        out.append(Harvested(d.identifier, created))
        entries.append({"actor": actor, "action": "catalogue.harvest", "object": d.identifier,
                        "decision": "info", "reason": "created" if created else "updated",
                        "details": {"node": d.node_id, "patients": d.patients,
                                    "studies": d.studies, "suppressed": d.suppressed}})
    columns = [*_IDENTITY, *_default_curation(parsed[0]), *HARVESTED]
    ids = repository.upsert_datasets(
        session, [{c: row[c] for c in columns} for row in rows.values()], replace=HARVESTED)
    repository.expire_loaded(session, ids.values())
    # Facets and search text are derived from the whole row, curated fields included.
    # (Plain namespaces, not Dataset objects: the ORM's instrumented constructor would
    # cost more than the rest of the harvest's Python.)
    repository.reindex_many(session, [
        SimpleNamespace(**{**row, "id": ids[identifier]}) for identifier, row in rows.items()])
    audit.record_many(session, entries)
    return out


def get_dataset(session: Session, identifier: str) -> Dataset:
    dataset = repository.get_by_identifier(session, identifier)
    if dataset is None:
        raise DatasetNotFound(f"no dataset {identifier!r} in the catalogue")
    return dataset


def list_datasets(session: Session) -> list[Dataset]:
    return repository.list_datasets(session)


def curate(
    session: Session,
    identifier: str,
    changes: CurationIn,
    *,
    actor: str,
    audit: AuditLog = CENTRAL_AUDIT,
) -> Dataset:
    """Edit a dataset's curated fields; later harvests keep them. The caller has decided
    the actor may (see `curate_as`)."""
    dataset = get_dataset(session, identifier)
    fields = changes.model_dump(exclude_none=True)
    for key, value in fields.items():
        setattr(dataset, key, value)
    dataset.curated_at = datetime.now(UTC)
    dataset.curated_by = actor[:320]
    session.flush()
    repository.reindex(session, dataset)
    audit.record(session, actor=actor, action="catalogue.curate", object=identifier,
                 decision="info", reason="edited " + ", ".join(sorted(fields)),
                 details=fields)
    return dataset


def curate_as(
    session: Session,
    identifier: str,
    changes: CurationIn,
    *,
    principal: Principal,
    policy: PolicyService,
    sessions: sessionmaker[Session],
    audit: AuditLog = CENTRAL_AUDIT,
) -> Dataset:
    """Curation by a person: `policies/catalogue/curation` decides (only the holding
    institution's approvers), and the decision is audited whichever way it goes: an
    allow in the change's own transaction, a denial in one of its own (`sessions`), since
    the refused request's transaction is rolled back."""
    dataset = get_dataset(session, identifier)
    decide_or_refuse(policy, "catalogue/curation/decision", {
        "subject": principal.policy_input(),
        "dataset": {"identifier": dataset.identifier, "node_id": dataset.node_id},
    }, audit=audit, sessions=sessions, session=session, actor=principal.id,
        action="catalogue.curate.authorize", object=identifier,
        refuse=lambda d: CurationRefused(d.reason))
    return curate(session, identifier, changes, actor=principal.id, audit=audit)


def dataset_out(dataset: Dataset) -> DatasetOut:
    """A dataset as the API shows it: its codes with their names for people (the WHO
    title of each ICD-10 category, the name of each modality and body part)."""
    out = DatasetOut.model_validate(dataset)
    out.quality = quality_label(dataset)
    out.conditions = [{**c, "title": icd10.title(str(c.get("value", "")))}
                      for c in out.conditions]
    out.modalities = [{**m, "name": concepts.MODALITIES[m["value"]].name}
                      if m.get("value") in concepts.MODALITIES else m for m in out.modalities]
    out.body_parts = [{**b, "name": concepts.BODY_PARTS[b["value"]].name}
                      if b.get("value") in concepts.BODY_PARTS else b for b in out.body_parts]
    return out


def _hit(d: Dataset) -> SearchHit:
    quality = quality_label(d)
    description = d.description
    if len(description) > SNIPPET_LENGTH:
        description = description[:SNIPPET_LENGTH].rsplit(" ", 1)[0] + " ..."
    return SearchHit(
        identifier=d.identifier, title=d.title, description=description, node_id=d.node_id,
        node_name=d.node_name, access_rights=d.access_rights,
        number_of_unique_individuals=d.number_of_unique_individuals,
        number_of_records=d.number_of_records, min_typical_age=d.min_typical_age,
        max_typical_age=d.max_typical_age,
        modalities=sorted(m["value"] for m in d.modalities),
        body_parts=sorted(b["value"] for b in d.body_parts),
        keywords=list(d.keywords), health_categories=list(d.health_categories),
        quality=QualitySummary(label=quality.label, score=quality.score),
    )


def search(session: Session, params: SearchParams) -> SearchOut:
    """One page of datasets matching the text and filters, with facet counts."""
    page = catalogue_search.search(session, params)
    chosen = params.filters()
    facets = {
        facet: [FacetCount(value=value, count=n,
                           label=facet_label(facet, value, page.institutions),
                           selected=value in chosen.get(facet, ()))
                for value, n in values]
        for facet, values in page.facets.items()
    }
    return SearchOut(total=page.total, page=params.page, size=params.size,
                     pages=max(1, -(-page.total // params.size)),
                     results=[_hit(d) for d in repository.get_many(session, page.ids)],
                     facets=facets)


__all__ = ["HARVESTED", "CatalogueError", "CurationRefused", "DatasetNotFound", "Harvested",
           "curate", "curate_as", "dataset_out", "get_dataset", "harvest", "list_datasets",
           "search"]
