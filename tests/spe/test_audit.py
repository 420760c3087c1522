"""The audit log's hash chain, on SQLite and PostgreSQL: tampering is named, not missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from spe.audit import AuditLog, CentralAuditEntry, CentralAuditHead
from spe.cli import app
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade

LOG = AuditLog(CentralAuditEntry, CentralAuditHead)


@pytest.fixture
def audited_db(database_url: str):
    upgrade(database_url, "central")
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    with session_scope(sessions) as session:
        for i in range(1, 11):
            LOG.record(session, actor=f"user{i}@issuer", action="test.action",
                       object=f"object/{i}", decision="allow" if i % 2 else "deny",
                       reason=f"reason {i}", details={"i": i})
    yield database_url, engine, sessions
    engine.dispose()


def verify_cli(url: str):
    return CliRunner().invoke(app, ["audit", "verify", "--database-url", url])


def test_clean_log_verifies(audited_db):
    url, _, sessions = audited_db
    with sessions() as session:
        report = LOG.verify(session)
    assert report.ok
    assert report.checked == 10
    result = verify_cli(url)
    assert result.exit_code == 0, result.output
    assert "10 entries verified" in result.output


def test_edited_row_is_named(audited_db):
    url, engine, _ = audited_db
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET decision = 'allow' WHERE seq = 4"))
    result = verify_cli(url)
    assert result.exit_code == 1
    assert "first bad entry is entry 4" in result.output
    assert "edited" in result.output


def test_deleted_row_is_named(audited_db):
    url, engine, _ = audited_db
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 6"))
    result = verify_cli(url)
    assert result.exit_code == 1
    assert "first bad entry is entry 6" in result.output


def test_swapped_rows_are_named(audited_db):
    url, engine, _ = audited_db
    # Swap the contents of entries 3 and 7 by exchanging their sequence numbers.
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET seq = -3 WHERE seq = 3"))
        conn.execute(text("UPDATE audit_log SET seq = 3 WHERE seq = 7"))
        conn.execute(text("UPDATE audit_log SET seq = 7 WHERE seq = -3"))
    result = verify_cli(url)
    assert result.exit_code == 1
    assert "first bad entry is entry 3" in result.output


def test_edit_with_recomputed_hash_is_caught_at_the_next_entry(audited_db):
    from spe.audit.service import entry_hash

    url, engine, sessions = audited_db
    with sessions() as session:
        e = session.get(CentralAuditEntry, 5)
        fields = dict(seq=e.seq, at=e.at, actor="someone-else", action=e.action,
                      object=e.object, decision=e.decision, reason=e.reason,
                      details=e.details, prev_hash=e.prev_hash)
    forged = entry_hash(**fields)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'someone-else', hash = :h WHERE seq = 5"),
                     {"h": forged})
    result = verify_cli(url)
    assert result.exit_code == 1
    assert "first bad entry is entry 6" in result.output


def test_deleted_tail_is_caught(audited_db):
    url, engine, _ = audited_db
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= 9"))
    result = verify_cli(url)
    assert result.exit_code == 1
    assert "deleted from the end" in result.output


def test_entry_rolls_back_with_its_transaction(audited_db):
    _, _, sessions = audited_db
    def failing_change() -> None:
        with session_scope(sessions) as session:
            LOG.record(session, actor="a", action="change", object="x", decision="allow")
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    with sessions() as session:
        report = LOG.verify(session)
    assert report.ok
    assert report.checked == 10


def test_prune_keeps_a_year_and_the_chain_verifies(audited_db):
    _, _, sessions = audited_db
    with session_scope(sessions) as session:
        LOG.record(session, actor="late", action="a", object="o", decision="info",
                   at=datetime.now(UTC) + timedelta(days=400))
    with session_scope(sessions) as session:
        removed = LOG.prune(session, retention_days=365,
                            now=datetime.now(UTC) + timedelta(days=380))
    assert removed == 10
    with sessions() as session:
        report = LOG.verify(session)
    assert report.ok
    assert report.checked == 1
    with session_scope(sessions) as session, pytest.raises(ValueError, match="365"):
        LOG.prune(session, retention_days=30)


def test_concurrent_writers_never_claim_the_same_place_in_the_chain(database_url: str):
    """Many requests at once, each reading (as the door does) before it appends."""
    import threading

    from spe.users.models import User

    upgrade(database_url, "central")
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    errors: list[Exception] = []

    def worker(n: int) -> None:
        for i in range(15):
            try:
                with session_scope(sessions) as session:
                    session.execute(select(User).limit(1)).all()  # a read first
                    LOG.record(session, actor=f"w{n}", action="test.concurrent",
                               object=str(i), decision="info")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        with sessions() as session:
            report = LOG.verify(session)
        assert report.ok, report.breaks
        assert report.checked == 8 * 15
    finally:
        engine.dispose()
