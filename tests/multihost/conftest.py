"""Fixtures of the tests across hosts: one federation in network namespaces for the whole
directory (tests/multihost/federation.py; package scope: it is torn down after the
directory's last test, not left running under the rest of the suite), and on any exit;
skipped without root or `ip netns`, failed instead in CI (CI=true)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from tests.conftest import IN_CI, POSTGRES_URL, bwrap_problem
from tests.multihost.federation import (
    APPROVERS,
    SITES,
    Federation,
    build,
    drop_databases,
    spe_command,
)
from tests.multihost.netns import require_netns
from tests.orthanc import require_orthanc

#: Patients per institution: enough for a node's counts over the statistics threshold.
PATIENTS = 40


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "multihost: builds Linux network namespaces (root; tests/multihost)")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "tests/multihost/" in str(item.fspath):
            item.add_marker(pytest.mark.multihost)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="package")
def federation(tmp_path_factory) -> Iterator[Federation]:
    require_netns()
    require_orthanc()
    reason = bwrap_problem()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason}; the sandbox is required in CI")
        pytest.skip(reason)
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    root = tmp_path_factory.mktemp("multihost")
    root.chmod(0o700)
    fed = build(root, patients=PATIENTS, admin_url=POSTGRES_URL)
    try:
        yield fed
    finally:
        fed.stop_all()
        fed.net.teardown()
        drop_databases(POSTGRES_URL)


@pytest.fixture(scope="package")
def harvest(federation: Federation) -> subprocess.CompletedProcess:
    """`spe catalogue harvest` of every node, run by the centre's operator on its host."""
    fed = federation
    nodes = [a for site in SITES for a in ("--node", fed.node_url(site))]
    return fed.net.exec("central", *spe_command(), "catalogue", "harvest", *nodes,
                        check=False, env=fed.central.env)


@pytest.fixture(scope="package")
def datasets(federation: Federation, harvest) -> dict[str, str]:
    """site -> the identifier of its dataset in the catalogue."""
    assert harvest.returncode == 0, harvest.stdout + harvest.stderr
    with federation.hub() as hub:
        found = hub.get("/api/v1/catalogue/search", params={"size": 100})
        assert found.status_code == 200, found.text
    by_site = {hit["node_id"]: hit["identifier"] for hit in found.json()["results"]}
    assert set(by_site) == set(SITES), found.json()
    return by_site


def issue_permit(fed: Federation, datasets: dict[str, str], members=("carol",)) -> dict:
    """A permit over every node's dataset, applied for, approved at each institution and
    issued; returns the issue answer (with `pushed`, node -> outcome)."""
    issuer = fed.central_url
    with fed.hub() as hub:
        alice = fed.headers("alice", "researcher")
        body = {"organisation": "Uni", "title": "Across hosts", "summary": "s",
                "purpose": "scientific_research", "declaration": True,
                "start_date": str(date.today()),
                "end_date": str(date.today() + timedelta(days=90)),
                "members": [f"{m}@{issuer}" for m in members],
                "datasets": [datasets[s] for s in SITES]}
        applied = hub.post("/api/v1/permits", json=body, headers=alice)
        assert applied.status_code in (200, 201), applied.text
        pid = applied.json()["id"]
        submitted = hub.post(f"/api/v1/permits/{pid}/submit", headers=alice)
        assert submitted.status_code == 200, submitted.text
        for site, user in APPROVERS.items():
            review = hub.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                              headers=fed.headers(user, "approver", site))
            assert review.status_code == 200, review.text
        issued = hub.post(f"/api/v1/permits/{pid}/issue", json={"reason": "ok"},
                          headers=fed.headers("hilde", "hdab"))
        assert issued.status_code == 200, issued.text
        return issued.json()


@pytest.fixture(scope="package")
def permit(federation: Federation, datasets) -> dict:
    return issue_permit(federation, datasets)
