"""A central database for tests: migrated, with a catalogue that lists the given sites."""

from __future__ import annotations

from collections.abc import Iterable

from catalogue import service as catalogue
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from tests.catalogue.test_search import descriptor


def catalogued_central(database_url: str, sites: Iterable[str], *, patients: int,
                       conditions: dict[str, int] | None = None) -> str:
    """Migrates `database_url` and harvests one descriptor per site: `patients` aged 20-80,
    half of them with an MR brain study. Returns the URL, for chaining."""
    upgrade(database_url, "central")
    engine = make_engine(database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        catalogue.harvest(session, [
            descriptor(site, site, patients=patients, ages=(20, 80),
                       modalities={"MR": patients // 2}, body_parts={"BRAIN": patients // 2},
                       conditions=conditions or {})
            for site in sites], actor="test")
    engine.dispose()
    return database_url
