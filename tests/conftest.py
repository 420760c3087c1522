"""Shared fixtures: databases on SQLite and on the real PostgreSQL, tokens, apps."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("SPE_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _postgres_admin():
    import psycopg

    try:
        return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")


@contextmanager
def _fresh_postgres() -> Iterator[str]:
    name = f"spe_test_{uuid.uuid4().hex[:12]}"
    with _postgres_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _postgres_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with _fresh_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path: Path) -> str:
    """Runs the test once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def other_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second database of `database_url`'s kind: a node's beside a centre's."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    with _fresh_postgres() as url:
        yield url


@pytest.fixture(autouse=True)
def _test_runs_umask() -> Iterator[None]:
    """An `spe` command run in-process (CliRunner) sets the services' umask 077 for the
    whole process: the test run's own comes back after each test."""
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox a job here, or None if it can."""
    import subprocess

    from spe.sandbox.bwrap import find_bwrap

    bwrap = find_bwrap()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    probe = subprocess.run([bwrap, "--unshare-all", "--ro-bind", "/", "/", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode:
        return f"bwrap --unshare-all does not work here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def needs_sandbox() -> None:
    """For modules that run jobs: skipped without a working bubblewrap, failed in CI."""
    reason = bwrap_problem()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason}; the sandbox is required in CI")
        pytest.skip(reason)
