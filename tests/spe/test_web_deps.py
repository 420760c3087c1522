"""The request's transaction is committed before the response leaves, not after.

FastAPI (>= 0.121) runs a yield dependency's exit after the response is sent unless it is
declared with scope="function". A commit there would tell the client 200 for a write that
may still fail, and lets the client's next read race the commit (the catalogue's browser
test saw a curated title missing on the read-back).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from spe.db import make_engine, make_sessionmaker
from spe.web import AppContext, DbSession


class _Base(DeclarativeBase):
    pass


class _Thing(_Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(primary_key=True)


def test_a_commit_that_fails_is_an_error_response_not_a_200(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'deps.db'}")
    _Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(_Thing).values(id=1))

    app = FastAPI()
    app.state.ctx = AppContext(service="test", settings=None, sessions=make_sessionmaker(engine),
                               verifier=None, policy=None, audit=None, name="test")

    @app.post("/things")
    def add(session: DbSession) -> dict:
        # Only added, not flushed: the duplicate key fails at the dependency's commit.
        session.add(_Thing(id=1))
        return {"ok": True}

    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.post("/things").status_code == 500
    finally:
        engine.dispose()
