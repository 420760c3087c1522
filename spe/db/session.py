"""Engine and session factories; the caller (request or command) owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session, sessionmaker

from spe.errors import SPEError


class UnstorableText(SPEError):
    """PostgreSQL's text holds no NUL character: a value with one, from a URL or a body,
    made the driver raise (a 500). Refused before it is sent (SQLite stores it)."""

    status_code = 422
    error = "invalid_request"


def make_engine(url: str, **kwargs) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        engine.dialect.colspecs = {**engine.dialect.colspecs, DateTime: _UTCDateTime}
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    return engine


def _refuse_nul(_conn, _cursor, _statement, parameters, _context, _executemany) -> None:
    if any("\x00" in text for text in _texts(parameters)):
        raise UnstorableText("text with a NUL character (U+0000) is refused")


def _texts(parameters):
    """The strings among a statement's parameters: one row or many (executemany, batched
    inserts), as a tuple or a dict, values or arrays."""
    if isinstance(parameters, str):
        yield parameters
    elif isinstance(parameters, dict):
        for value in parameters.values():
            yield from _texts(value)
    elif isinstance(parameters, list | tuple):
        for value in parameters:
            yield from _texts(value)


class _UTCDateTime(sqlite.DATETIME):
    """SQLite keeps no UTC offset: a column declared `DateTime(timezone=True)` is written
    in UTC and read back as UTC, aware, as PostgreSQL's timestamptz gives it (a naive time
    in an API answer is not RFC 3339, and could not be compared with an aware one)."""

    def bind_processor(self, dialect):
        process = super().bind_processor(dialect)
        if not self.timezone or process is None:
            return process

        def bind(value):
            if value is not None and getattr(value, "tzinfo", None) is not None:
                value = value.astimezone(UTC)
            return process(value)

        return bind

    def result_processor(self, dialect, coltype):
        process = super().result_processor(dialect, coltype)
        if not self.timezone:
            return process

        def result(value):
            value = process(value) if process is not None else value
            if value is not None and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value

        return result


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the demo's readers go on while a sync writes; foreign keys are off by default.
    cur.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL syncs at checkpoints instead of at every commit: a commit survives
    # a crash of the process (not necessarily a power cut), and the database stays
    # consistent either way. Every request commits (its audit entry), so this spares an
    # fsync per request.
    cur.execute("PRAGMA synchronous=NORMAL")
    # A page cache of up to 64 MiB per connection (the default is 2 MiB): a node's index
    # of 10,000 patients is ~20 MB, which queries would otherwise re-read on every request.
    cur.execute("PRAGMA cache_size=-65536")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
