"""Waiting for the database at start: a service started with (or before) its database
server retries with backoff instead of exiting on a traceback, saying what it waits for
(host, port, database; never the password), and gives up after SPE_DB_WAIT_SECONDS."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

log = logging.getLogger("spe.startup")
FIRST_DELAY, MAX_DELAY = 0.5, 10.0


class DatabaseNeverCame(RuntimeError):
    """The database did not answer within the wait (or its URL is not one): one line."""


def describe(url: str) -> str:
    """host:port/name of a database URL (a SQLite file's path), never its password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "a database URL that cannot be parsed"
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite {parsed.database or ':memory:'}"
    port = f":{parsed.port}" if parsed.port else ""
    host = parsed.host or "localhost"
    return f"{parsed.get_backend_name()} at {host}{port}/{parsed.database or ''}"


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's first line (psycopg's says "connection refused"), without the URL."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return first[:300]


def wait_for_database(url: str, wait_seconds: float, *,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> int:
    """Connect until it works (returns the attempts it took) or `wait_seconds` have passed
    (DatabaseNeverCame). One log line per failed attempt; delays double up to 10 s.
    SQLite is not waited for (0 attempts)."""
    what = describe(url)
    if _is_sqlite(url):
        return 0  # a file the service opens (and makes) itself: no server to wait for
    try:
        engine = create_engine(url, pool_pre_ping=False,
                               connect_args=_connect_timeout(url))
    except (ArgumentError, ValueError, ImportError) as exc:
        raise DatabaseNeverCame(f"SPE_DATABASE_URL is not a usable database URL: "
                                f"{type(exc).__name__}") from None
    deadline = clock() + wait_seconds
    delay, attempt = FIRST_DELAY, 0
    try:
        while True:
            attempt += 1
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                if attempt > 1:
                    log.info("the database %s answers (attempt %d)", what, attempt,
                             extra={"database": what, "attempt": attempt})
                return attempt
            except SQLAlchemyError as exc:
                left = deadline - clock()
                if left <= 0:
                    raise DatabaseNeverCame(
                        f"the database {what} did not answer within {wait_seconds:g} s "
                        f"({attempt} attempts; last: {_reason(exc)})") from None
                pause = min(delay, left)
                log.warning("waiting for the database %s (attempt %d: %s); next try in "
                            "%.1f s, giving up after %g s", what, attempt, _reason(exc),
                            pause, wait_seconds,
                            extra={"database": what, "attempt": attempt})
                sleep(pause)
                delay = min(delay * 2, MAX_DELAY)
    finally:
        engine.dispose()


def _is_sqlite(url: str) -> bool:
    try:
        return make_url(url).get_backend_name() == "sqlite"
    except ArgumentError:
        return False


def _connect_timeout(url: str) -> dict:
    """A bounded connect for PostgreSQL (a host that drops packets would hang otherwise)."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        return {}
    return {"connect_timeout": 5} if backend == "postgresql" else {}
