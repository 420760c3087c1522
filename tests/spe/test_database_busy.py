"""A database that stays locked past SQLite's busy timeout (one writer at a time) gives the
caller a 503 to retry, with no trace of the database's words; any other database fault
stays a fault. Exercised against a real SQLite file held locked by another connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from spe.db import make_engine
from spe.web.refusals import install_refusals


def test_a_locked_database_is_a_503_to_retry_and_other_faults_stay_500(tmp_path: Path):
    path = tmp_path / "busy.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    app = FastAPI()
    install_refusals(app)

    @app.post("/write")
    def write() -> dict:
        with engine.begin() as conn:
            conn.execute(text("PRAGMA busy_timeout=50"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        return {"ok": True}

    @app.get("/broken")
    def fault() -> dict:
        with engine.begin() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        return {}

    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    client = TestClient(app, raise_server_exceptions=False)
    try:
        busy = client.post("/write")
    finally:
        holder.rollback()
        holder.close()
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.json() == {"error": "busy",
                           "detail": "the service is busy writing; try again in a moment"}
    assert client.post("/write").json() == {"ok": True}  # the lock gone, the write goes in
    broken = client.get("/broken")
    assert broken.status_code == 500
    assert "no_such_table" not in broken.text
