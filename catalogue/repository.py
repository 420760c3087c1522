"""All SQL of the catalogue, search included.

Full text is matched in the database: SQLite's FTS5 table `catalogue_fts` ranked by bm25,
or PostgreSQL's table `catalogue_text` (a GIN-indexed tsvector) ranked by ts_rank; titles weigh
more than keywords, keywords more than the rest. Facets are plain rows
(`catalogue_facets`), read the same way on both into the search index (catalogue.search).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import (
    Row,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from catalogue.facets import facet_values, search_document
from catalogue.models import CatalogueRevision, Dataset, DatasetFacet
from spe.db.session import UnstorableText

#: Words too common to search by; dropped on both databases so they answer alike
#: (PostgreSQL's English configuration ignores them, FTS5 would not).
STOP_WORDS = frozenset("a an and are as at be by for from in is it of on or the to with".split())
MAX_TERMS = 12
#: Datasets per statement where a statement takes a list of them (IN lists, text arrays):
#: well under both databases' limits on bound parameters.
CHUNK = 1000


def get_by_identifier(session: Session, identifier: str) -> Dataset | None:
    return session.execute(
        select(Dataset).where(Dataset.identifier == identifier)
    ).scalar_one_or_none()


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.execute(select(Dataset).order_by(Dataset.identifier)).scalars())


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def existing_rows(session: Session, identifiers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The stored rows (every column) of those of the datasets that exist, by identifier:
    one SELECT per CHUNK identifiers, not one per dataset."""
    table = Dataset.__table__
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(list(dict.fromkeys(identifiers))):
        for row in session.execute(select(table).where(table.c.identifier.in_(chunk))).mappings():
            found[row["identifier"]] = dict(row)
    return found


def upsert_datasets(session: Session, rows: Sequence[dict[str, Any]],
                    replace: Sequence[str]) -> dict[str, int]:
    """Insert the datasets that are new and overwrite the `replace` columns of those that
    exist (matched on identifier); identifier -> id of every row. `rows` all have the same
    keys and distinct identifiers. PostgreSQL: one statement per CHUNK rows, each column
    sent as one array; SQLite: one executemany (SQLAlchemy's insertmanyvalues)."""
    if not rows:
        return {}
    table = Dataset.__table__
    if _postgres(session):
        return {identifier: id_ for chunk in _chunks(rows) for id_, identifier in
                _pg_json_insert(session, table, chunk, conflict="identifier",
                                  replace=replace, returning=("id", "identifier"))}
    stmt = sqlite.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.identifier],
        set_={name: stmt.excluded[name] for name in replace},
    ).returning(table.c.id, table.c.identifier)
    return {identifier: id_ for id_, identifier in session.execute(stmt, list(rows))}


def _pg_json_insert(session: Session, target: Table, rows: Sequence[dict[str, Any]], *,
                    conflict: str | None = None, replace: Sequence[str] = (),
                    returning: Sequence[str] = ()) -> Sequence[Row]:
    """INSERT ... SELECT FROM json_to_recordset(the rows as one JSON document): one
    parameter for the whole chunk. A multi-row VALUES list (or arrays) would send a
    parameter (or an escaped array element) per value, and psycopg's work on those costs
    more than PostgreSQL's on the rows. JSON columns arrive as the JSON text json.dumps
    makes of them, as the driver would send them one by one."""
    names = list(rows[0])
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(map(quote, names))
    types = ", ".join(f"{quote(name)} {target.c[name].type.compile(dialect=dialect)}"
                      for name in names)
    sql = (f"INSERT INTO {quote(target.name)} ({columns}) SELECT {columns} "
           f"FROM json_to_recordset(CAST(:rows AS json)) AS u({types})")
    if conflict is not None:
        sql += f" ON CONFLICT ({quote(conflict)}) DO UPDATE SET " + ", ".join(
            f"{quote(name)} = EXCLUDED.{quote(name)}" for name in replace)
    if returning:
        sql += f" RETURNING {', '.join(map(quote, returning))}"
    result = session.execute(text(sql), {"rows": _json_rows(rows)})
    return result.all() if returning else []


def _json_rows(rows: Sequence[dict[str, Any]]) -> str:
    # JSON escapes a NUL as \u0000, which spe.db's check on parameters would not see and
    # PostgreSQL's text refuses: refused here as it is anywhere else.
    if _holds_nul(rows):
        raise UnstorableText("text with a NUL character (U+0000) is refused")
    return json.dumps(rows, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, date):  # datetimes too: timestamptz reads ISO 8601 with its offset
        return value.isoformat()
    raise TypeError(f"not storable as JSON: {type(value).__name__}")


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


def expire_loaded(session: Session, ids: Iterable[int]) -> None:
    """Datasets this session holds as objects are stale after a Core write: reload them
    when next read."""
    for id_ in ids:
        held = session.identity_map.get(Session.identity_key(Dataset, id_))
        if held is not None:
            session.expire(held)


def add(session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset


def reindex(session: Session, dataset: Dataset) -> None:
    """Rebuild a (flushed) dataset's facet rows and full-text document, and bump the
    catalogue's revision so searchers reload."""
    reindex_many(session, [dataset])


def reindex_many(session: Session, datasets: Sequence[Dataset]) -> None:
    """`reindex` for many datasets at once (each with its id; the last one of an id counts):
    the revision bumped once, the facet rows and the search text replaced in a few
    statements per CHUNK datasets, not a few per dataset."""
    latest = {d.id: d for d in datasets}
    if not latest:
        return
    bump_revision(session)
    ids = list(latest)
    facets = DatasetFacet.__table__
    for chunk in _chunks(ids):
        session.execute(delete(facets).where(facets.c.dataset_id.in_(chunk)))
    rows = [{"dataset_id": d.id, "facet": f, "value": v[:300]}
            for d in latest.values() for f, v in facet_values(d)]
    if rows and _postgres(session):
        for chunk in _chunks(rows, CHUNK * 10):
            _pg_json_insert(session, facets, chunk)
    elif rows:
        session.execute(insert(facets), rows)
    docs = [(d.id, search_document(d)) for d in latest.values()]
    if _postgres(session):
        for chunk in _chunks(docs):
            session.execute(_PG_TEXT, {"rows": _json_rows([
                {"id": i, "title": doc.title, "keywords": doc.keywords, "body": doc.body}
                for i, doc in chunk])})
    else:
        for chunk in _chunks(ids):
            session.execute(_SQLITE_TEXT_DELETE, {"ids": list(chunk)})
        session.execute(_SQLITE_TEXT_INSERT, [
            {"id": i, "title": doc.title, "keywords": doc.keywords, "body": doc.body}
            for i, doc in docs])


# One statement for a chunk of datasets (the rows as one JSON document, as in
# _pg_json_insert), each weighted as before (title A > keywords B > body C).
_PG_TEXT = text(
    "INSERT INTO catalogue_text (dataset_id, search_vector) "
    "SELECT u.id, setweight(to_tsvector('english', u.title), 'A') || "
    "setweight(to_tsvector('english', u.keywords), 'B') || "
    "setweight(to_tsvector('english', u.body), 'C') "
    "FROM json_to_recordset(CAST(:rows AS json)) AS u(id integer, title text, keywords text, "
    "body text) "
    "ON CONFLICT (dataset_id) DO UPDATE SET search_vector = EXCLUDED.search_vector")
_SQLITE_TEXT_DELETE = text("DELETE FROM catalogue_fts WHERE rowid IN :ids").bindparams(
    bindparam("ids", expanding=True))
_SQLITE_TEXT_INSERT = text("INSERT INTO catalogue_fts (rowid, title, keywords, body) "
                           "VALUES (:id, :title, :keywords, :body)")


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
    # On the table, not the ORM entity: an ORM UPDATE first scans every object the session
    # holds (to keep them in step), which grows with the datasets a harvest has loaded.
    revision_table = CatalogueRevision.__table__
    session.execute(update(revision_table).where(revision_table.c.id == 1)
                    .values(revision=revision_table.c.revision + 1))


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
