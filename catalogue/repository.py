"""All SQL of the catalogue, search included.

Full text is matched in the database: SQLite's FTS5 table `catalogue_fts` ranked by bm25,
or PostgreSQL's table `catalogue_text` (a GIN-indexed tsvector) ranked by ts_rank; titles weigh
more than keywords, keywords more than the rest. Facets are plain rows
(`catalogue_facets`), read the same way on both into the search index (catalogue.search).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, literal_column, select, table, text, update
from sqlalchemy.orm import Session

from catalogue.facets import facet_values, search_document
from catalogue.models import CatalogueRevision, Dataset, DatasetFacet

#: Words too common to search by; dropped on both databases so they answer alike
#: (PostgreSQL's English configuration ignores them, FTS5 would not).
STOP_WORDS = frozenset("a an and are as at be by for from in is it of on or the to with".split())
MAX_TERMS = 12


def get_by_identifier(session: Session, identifier: str) -> Dataset | None:
    return session.execute(
        select(Dataset).where(Dataset.identifier == identifier)
    ).scalar_one_or_none()


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.execute(select(Dataset).order_by(Dataset.identifier)).scalars())


def add(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def reindex(session: Session, dataset: Dataset) -> None:
    """Rebuild a (flushed) dataset's facet rows and full-text document, and bump the
    catalogue's revision so searchers reload."""
    bump_revision(session)
    session.execute(delete(DatasetFacet).where(DatasetFacet.dataset_id == dataset.id))
    rows = [{"dataset_id": dataset.id, "facet": f, "value": v[:300]}
            for f, v in facet_values(dataset)]
    if rows:
        session.execute(insert(DatasetFacet), rows)
    doc = search_document(dataset)
    values = {"id": dataset.id, "title": doc.title, "keywords": doc.keywords, "body": doc.body}
    if _postgres(session):
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


def search_terms(q: str) -> list[str]:
    """The words of a free-text query (letters and digits only: nothing reaches the match
    syntax of either database unquoted)."""
    words = [w for w in re.findall(r"[^\W_]+", q.lower()) if w not in STOP_WORDS]
    return list(dict.fromkeys(words))[:MAX_TERMS]


def text_match(session: Session, terms: list[str]) -> Sequence[tuple[int, float]]:
    """(id, rank) of the datasets holding every term, the last one as a prefix; a higher
    rank is a better match. `terms` come from `search_terms`."""
    if _postgres(session):
        tsquery = func.to_tsquery("english", " & ".join([*terms[:-1], terms[-1] + ":*"]))
        vector = literal_column("search_vector")
        stmt = (select(literal_column("dataset_id"), func.ts_rank(vector, tsquery))
                .select_from(table("catalogue_text")).where(vector.op("@@")(tsquery)))
    else:
        match = " ".join([*(f'"{t}"' for t in terms[:-1]), f'"{terms[-1]}"*'])
        stmt = (select(literal_column("rowid"),
                       -literal_column("bm25(catalogue_fts, 10.0, 4.0, 1.0)"))
                .select_from(table("catalogue_fts"))
                .where(text("catalogue_fts MATCH :match").bindparams(match=match)))
    return session.execute(stmt).all()


def revision(session: Session) -> int:
    return int(session.execute(
        select(CatalogueRevision.revision).where(CatalogueRevision.id == 1)).scalar_one())


def bump_revision(session: Session) -> None:
    session.execute(update(CatalogueRevision).where(CatalogueRevision.id == 1)
                    .values(revision=CatalogueRevision.revision + 1))


@dataclass(frozen=True)
class IndexRows:
    """What the in-memory search index is built from, read in one transaction."""

    revision: int
    # (id, identifier, title, individuals, min age, max age, node id, node name)
    datasets: list[tuple]
    facets: list[tuple[int, str, str]]  # (dataset id, facet, value)


def index_rows(session: Session) -> IndexRows:
    return IndexRows(
        revision=revision(session),
        datasets=[tuple(r) for r in session.execute(select(
            Dataset.id, Dataset.identifier, Dataset.title,
            Dataset.number_of_unique_individuals, Dataset.min_typical_age,
            Dataset.max_typical_age, Dataset.node_id, Dataset.node_name))],
        facets=[tuple(r) for r in session.execute(select(
            DatasetFacet.dataset_id, DatasetFacet.facet, DatasetFacet.value))],
    )


def get_many(session: Session, ids: Sequence[int]) -> list[Dataset]:
    """Datasets by id, in the order given."""
    if not ids:
        return []
    found = {d.id: d for d in session.execute(
        select(Dataset).where(Dataset.id.in_(list(ids)))).scalars()}
    return [found[i] for i in ids if i in found]


def harvested_nodes(session: Session) -> list[tuple[str, str, int, object]]:
    """(node id, node name, datasets, last harvested at) per node, by node id."""
    rows = session.execute(
        select(Dataset.node_id, func.max(Dataset.node_name), func.count(Dataset.id),
               func.max(Dataset.harvested_at))
        .group_by(Dataset.node_id).order_by(Dataset.node_id))
    return [tuple(r) for r in rows]
