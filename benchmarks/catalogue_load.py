"""Harvest throughput: N generated HealthDCAT-AP dataset descriptors harvested into the
catalogue, by today's bulk path (`catalogue.service.harvest`) and by the per-dataset path it
replaced (`catalogue.reference_harvest.harvest_per_row`, kept as the baseline), each into a
fresh, migrated database, in the same run, on PostgreSQL and on SQLite.

The descriptors are catalogue_search.py's (2,000 institutions x 5 collections at the
default 10,000), harvested in lists of 500 in one transaction, as that benchmark loads
them. A second harvest of the same, unchanged descriptors (every dataset updated, as a
scheduled round does) is timed too. Both paths must leave the same datasets, facet rows
and search text; the run stops if they do not.

    python benchmarks/catalogue_load.py [--datasets 10000] [--quick] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalogue_search import POSTGRES_URL, generate  # noqa: E402
from report import Figure, print_table  # noqa: E402

from catalogue import icd10, service  # noqa: E402
from catalogue.reference_harvest import harvest_per_row  # noqa: E402
from spe.db import make_engine, make_sessionmaker, session_scope  # noqa: E402
from spe.db.migrate import upgrade  # noqa: E402

BATCH = 500
TARGET = 5.0
Harvest = Callable[..., object]


@contextmanager
def fresh_postgres() -> Iterator[str]:
    name = f"spe_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def harvest_twice(url: str, harvest: Harvest, descriptors: list) -> tuple[float, float, tuple]:
    """Seconds for the first harvest and for a second one of the same descriptors (the
    migration not counted), and what the catalogue holds afterwards."""
    upgrade(url, "central")
    engine = make_engine(url)
    try:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            with session_scope(make_sessionmaker(engine)) as session:
                for i in range(0, len(descriptors), BATCH):
                    harvest(session, descriptors[i:i + BATCH], actor="bench")
            times.append(time.perf_counter() - start)
        return times[0], times[1], contents(engine)
    finally:
        engine.dispose()


def contents(engine) -> tuple:
    """Datasets (harvested columns), facet rows, search text and audit entries, by
    identifier: what both paths must agree on."""
    postgres = engine.dialect.name == "postgresql"
    search_text = (
        "SELECT d.identifier, t.search_vector::text FROM catalogue_text t "
        "JOIN catalogue_datasets d ON d.id = t.dataset_id ORDER BY 1" if postgres else
        "SELECT d.identifier, f.title, f.keywords, f.body FROM catalogue_fts f "
        "JOIN catalogue_datasets d ON d.id = f.rowid ORDER BY 1")
    with engine.connect() as conn:
        return (
            conn.execute(text(
                "SELECT identifier, title, node_name, number_of_unique_individuals, "
                "min_typical_age, max_typical_age, temporal_start, CAST(modalities AS TEXT), "
                "CAST(conditions AS TEXT) FROM catalogue_datasets ORDER BY identifier")).all(),
            conn.execute(text(
                "SELECT d.identifier, f.facet, f.value FROM catalogue_facets f JOIN "
                "catalogue_datasets d ON d.id = f.dataset_id ORDER BY 1, 2, 3")).all(),
            conn.execute(text(search_text)).all(),
            conn.execute(text("SELECT object, reason FROM audit_log "
                              "WHERE action = 'catalogue.harvest' ORDER BY seq")).all(),
        )


def compare(backend: str, url_of: Callable[[], object], descriptors: list) -> list[Figure]:
    """Both paths on `backend`, each into a fresh database from `url_of`."""
    results = {}
    for label, harvest in (("per-row (before)", harvest_per_row),
                           ("bulk (now)", service.harvest)):
        with url_of() as url:
            results[label] = harvest_twice(url, harvest, descriptors)
        first, again, _ = results[label]
        print(f"  {backend:10} {label:17} first harvest {first:7.1f} s "
              f"({len(descriptors) / first:7.0f} datasets/s)   again {again:7.1f} s",
              flush=True)
    (old_first, old_again, old_rows), (new_first, new_again, new_rows) = results.values()
    if old_rows != new_rows:
        raise SystemExit(f"{backend}: the bulk harvest left other rows than the per-row one")
    n = f"{len(descriptors):,}"
    # The target is PostgreSQL's (production); SQLite's figure is shown beside it.
    target = TARGET if backend == "PostgreSQL" else None
    return [
        Figure(f"harvest {n} datasets into {backend}", f"bulk {new_first:.1f} s",
               f"per-row {old_first:.1f} s", old_first / new_first, target),
        Figure(f"re-harvest {n} into {backend}", f"bulk {new_again:.1f} s",
               f"per-row {old_again:.1f} s", old_again / new_again, target),
    ]


@contextmanager
def fresh_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{Path(tmp) / 'catalogue.db'}"


def figures(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=None,
                        help="descriptors to harvest (default 10,000; 2,000 with --quick)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args(argv)
    n = args.datasets or (2_000 if args.quick else 10_000)
    descriptors = [d for d, _ in generate(n)]
    icd10.title("C71")  # the WHO tables load once per process: not in either path's time
    print(f"harvesting {n:,} descriptors, {BATCH} per call, one transaction per harvest")
    out = []
    if not args.sqlite_only:
        out += compare("PostgreSQL", fresh_postgres, descriptors)
    out += compare("SQLite", fresh_sqlite, descriptors)
    return out


def main() -> None:
    print_table(figures())


if __name__ == "__main__":
    main()
