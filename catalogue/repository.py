"""All SQL of the catalogue, search included.

Search runs the same plain SQL on both databases for facets (`catalogue_facets`) and differs
only in the full-text match: SQLite's FTS5 table `catalogue_fts` ranked by bm25, or
PostgreSQL's `search_vector` (GIN-indexed tsvector) ranked by ts_rank_cd. Titles weigh
more than keywords, keywords more than the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Select,
    delete,
    func,
    insert,
    literal_column,
    nulls_last,
    select,
    table,
    text,
)
from sqlalchemy.orm import Session

from catalogue.facets import FACETS, facet_values, search_document
from catalogue.models import Dataset, DatasetFacet
from catalogue.schemas import SearchParams

#: Words too common to search by; dropped on both databases so they answer alike
#: (PostgreSQL's English configuration ignores them, FTS5 would not).
STOP_WORDS = frozenset("a an and are as at be by for from in is it of on or the to with".split())
MAX_TERMS = 12
#: At most this many values per facet come back (selected ones always do).
FACET_VALUE_LIMIT = 30


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
    """Rebuild a (flushed) dataset's facet rows and full-text document."""
    session.execute(delete(DatasetFacet).where(DatasetFacet.dataset_id == dataset.id))
    rows = [{"dataset_id": dataset.id, "facet": f, "value": v[:300]}
            for f, v in facet_values(dataset)]
    if rows:
        session.execute(insert(DatasetFacet), rows)
    doc = search_document(dataset)
    values = {"id": dataset.id, "title": doc.title, "keywords": doc.keywords, "body": doc.body}
    if _postgres(session):
        session.execute(text(
            "UPDATE catalogue_datasets SET search_vector = "
            "setweight(to_tsvector('english', :title), 'A') || "
            "setweight(to_tsvector('english', :keywords), 'B') || "
            "setweight(to_tsvector('english', :body), 'C') WHERE id = :id"), values)
    else:
        session.execute(text("DELETE FROM catalogue_fts WHERE rowid = :id"), {"id": dataset.id})
        session.execute(text("INSERT INTO catalogue_fts (rowid, title, keywords, body) "
                             "VALUES (:id, :title, :keywords, :body)"), values)


def search_terms(q: str) -> list[str]:
    """The words of a free-text query (letters and digits only: nothing reaches the match
    syntax of either database unquoted)."""
    words = [w for w in re.findall(r"[^\W_]+", q.lower()) if w not in STOP_WORDS]
    return list(dict.fromkeys(words))[:MAX_TERMS]


def _text_match(session: Session, terms: list[str]):
    """(id, rank) of the datasets holding every term, the last one as a prefix; higher
    rank is better."""
    if _postgres(session):
        tsquery = func.to_tsquery("english", " & ".join([*terms[:-1], terms[-1] + ":*"]))
        vector = literal_column("catalogue_datasets.search_vector")
        return (select(Dataset.id.label("id"),
                       func.ts_rank_cd(vector, tsquery).label("rank"))
                .where(vector.op("@@")(tsquery)).subquery("matched"))
    match = " ".join([*(f'"{t}"' for t in terms[:-1]), f'"{terms[-1]}"*'])
    return (select(literal_column("rowid").label("id"),
                   (-literal_column("bm25(catalogue_fts, 10.0, 4.0, 1.0)")).label("rank"))
            .select_from(table("catalogue_fts"))
            .where(text("catalogue_fts MATCH :match").bindparams(match=match))
            .subquery("matched"))


@dataclass
class SearchPage:
    total: int
    datasets: list[Dataset]
    facets: dict[str, list[tuple[str, int]]]
    institutions: dict[str, str]  # node_id -> name, for the facet's labels


class _Filters:
    """The WHERE clauses of one search, so facet counts can leave their own facet out."""

    def __init__(self, params: SearchParams, matched) -> None:
        self.params = params
        self.matched = matched
        self.by_facet = params.filters()

    def ids(self, *, without: str | None = None) -> Select | None:
        """The ids of matching datasets, or None when nothing narrows the catalogue."""
        clauses = []
        if self.matched is not None:
            clauses.append(Dataset.id.in_(select(self.matched.c.id)))
        for facet, values in self.by_facet.items():
            if facet != without:
                clauses.append(Dataset.id.in_(
                    select(DatasetFacet.dataset_id)
                    .where(DatasetFacet.facet == facet, DatasetFacet.value.in_(values))))
        if self.params.age_min is not None:
            clauses.append(Dataset.max_typical_age >= self.params.age_min)
        if self.params.age_max is not None:
            clauses.append(Dataset.min_typical_age <= self.params.age_max)
        return select(Dataset.id).where(*clauses) if clauses else None


def _facet_counts(session: Session, filters: _Filters, facets: Sequence[str],
                  ids: Select | None) -> dict[str, list[tuple[str, int]]]:
    stmt = (select(DatasetFacet.facet, DatasetFacet.value, func.count())
            .where(DatasetFacet.facet.in_(facets))
            .group_by(DatasetFacet.facet, DatasetFacet.value))
    if ids is not None:
        stmt = stmt.where(DatasetFacet.dataset_id.in_(ids))
    out: dict[str, list[tuple[str, int]]] = {f: [] for f in facets}
    for facet, value, n in session.execute(stmt):
        out[facet].append((value, n))
    return out


def search(session: Session, params: SearchParams) -> SearchPage:
    terms = search_terms(params.q)
    matched = _text_match(session, terms) if terms else None
    filters = _Filters(params, matched)
    ids = filters.ids()

    total_stmt = select(func.count()).select_from(Dataset)
    if ids is not None:
        total_stmt = select(func.count()).select_from(ids.subquery())
    total = int(session.execute(total_stmt).scalar_one())

    stmt = select(Dataset)
    order = []
    if matched is not None:
        stmt = stmt.join(matched, matched.c.id == Dataset.id)
        if params.sort == "relevance":
            order.append(matched.c.rank.desc())
    if ids is not None and (filters.by_facet or params.age_min is not None
                            or params.age_max is not None):
        stmt = stmt.where(Dataset.id.in_(ids))
    if params.sort == "title":
        order.append(func.lower(Dataset.title))
    elif params.sort == "individuals" or matched is None:
        order.append(nulls_last(Dataset.number_of_unique_individuals.desc()))
    # The identifier is unique: ties never reorder between pages.
    order.append(Dataset.identifier)
    stmt = stmt.order_by(*order).limit(params.size).offset((params.page - 1) * params.size)
    datasets = list(session.execute(stmt).scalars())

    # Counts per facet value over the other facets' filters, so a facet's own choices
    # stay visible (and countable) after one of them is ticked.
    plain = [f for f in FACETS if f not in filters.by_facet]
    facets = _facet_counts(session, filters, plain, ids)
    for facet in filters.by_facet:
        facets.update(_facet_counts(session, filters, [facet], filters.ids(without=facet)))
    for facet, values in facets.items():
        chosen = set(filters.by_facet.get(facet, ()))
        values.sort(key=lambda vc: (-vc[1], vc[0]))
        facets[facet] = [vc for i, vc in enumerate(values)
                         if i < FACET_VALUE_LIMIT or vc[0] in chosen]
    node_ids = {v for v, _ in facets.get("institution", [])} | {d.node_id for d in datasets}
    institutions = dict(session.execute(
        select(Dataset.node_id, Dataset.node_name).where(Dataset.node_id.in_(node_ids))
        .distinct()).all()) if node_ids else {}
    return SearchPage(total=total, datasets=datasets, facets={f: facets[f] for f in FACETS},
                      institutions=institutions)
