"""The airlock's human review at the centre, through the API: two different output
checkers release, only released and stored files are downloaded by the people on the
permit, revoking the permit withholds what is pending. Every refusal is audited."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from spe.airlock import OutputRules
from spe.airlock.review.models import AirlockFile
from spe.airlock.review.service import submit_outputs
from spe.app import create_central_app
from spe.audit import CentralAuditEntry
from spe.db import session_scope
from spe.identity import demo_issuer
from spe.settings import Settings
from tests.central import catalogued_central
from tests.spe.test_permits import apply_and_submit, hdab, review, uid

SAFE = b"sex,patients\nF,25\nM,31\n"
SMALL = b"sex,patients\nF,3\nM,40\n"


@pytest.fixture
def central(database_url: str, tmp_path: Path):
    catalogued_central(database_url, ("site-a", "site-b"), patients=100, conditions={"C71": 20})
    settings = Settings(data_dir=tmp_path, database_url=database_url,
                        oidc_issuer="http://central.test")
    app = create_central_app(settings)
    issuer = demo_issuer(settings)
    with TestClient(app, base_url="http://central.test") as client:
        client.as_ = lambda user, role, institution=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=institution)}
        client.ctx = app.state.ctx  # type: ignore[attr-defined]
        client.storage = tmp_path / "airlock"  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def pid(central) -> str:
    """An active permit of alice's, naming carol."""
    pid = apply_and_submit(central)
    assert review(central, pid, "bob", "site-a").status_code == 200
    assert review(central, pid, "bea", "site-b").status_code == 200
    assert hdab(central, pid, "issue").json()["status"] == "active"
    return pid


def submit(central, pid: str, tmp_path: Path) -> str:
    out = tmp_path / "job-out"
    out.mkdir(exist_ok=True)
    (out / "safe.csv").write_bytes(SAFE)
    (out / "small.csv").write_bytes(SMALL)
    with session_scope(central.ctx.sessions) as session:
        request = submit_outputs(session, job_id="job-1", node_id="site-a", pid=pid,
                                 requester=uid("alice"), output_dir=out,
                                 storage_dir=central.storage, rules=OutputRules(),
                                 policy=central.ctx.policy)
        return request.id


def reviews(central, rid: str, user: str, decision: str = "approve",
            role: str = "output_checker"):
    return central.post(f"/api/v1/airlock/requests/{rid}/reviews",
                        json={"decision": decision, "reason": f"{user} looked"},
                        headers=central.as_(user, role))


def download(central, rid: str, user: str, path: str = "site-a/safe.csv"):
    return central.get(f"/api/v1/airlock/requests/{rid}/files/{path}",
                       headers=central.as_(user, "researcher"))


def denials(central, rid: str, action: str) -> list[str]:
    with central.ctx.sessions() as session:
        return list(session.execute(select(CentralAuditEntry.reason).where(
            CentralAuditEntry.action == action, CentralAuditEntry.object == rid,
            CentralAuditEntry.decision == "deny")).scalars())


def test_two_checkers_release_and_only_the_safe_file_leaves(central, pid, tmp_path):
    rid = submit(central, pid, tmp_path)
    body = central.get(f"/api/v1/airlock/requests/{rid}",
                       headers=central.as_("olga", "output_checker")).json()
    files = {f["path"]: f for f in body["files"]}
    assert body["state"] == "pending"
    assert files["safe.csv"]["verdict"] == "pass"
    assert files["safe.csv"]["stored"]
    assert files["small.csv"]["verdict"] == "blocked"
    assert not files["small.csv"]["stored"]
    # the place and the rule, never the small count itself (it was "cell of 3 at row 3")
    assert files["small.csv"]["reasons"] == ["1 count below the threshold of 10: row 2, "
                                             "column 2"]
    assert files["small.csv"]["places"] == [{"rule": "small-count", "line": 2, "column": 2}]
    stored = sorted(p.name for p in (central.storage / rid).rglob("*") if p.is_file())
    assert stored == ["safe.csv"]  # the blocked file was never stored
    queue = central.get("/api/v1/airlock/requests",
                        headers=central.as_("olga", "output_checker")).json()
    assert [r["id"] for r in queue] == [rid]
    mine = central.get("/api/v1/airlock/requests", headers=central.as_("alice", "researcher"))
    assert [r["id"] for r in mine.json()] == [rid]

    first = reviews(central, rid, "olga")
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "pending"
    early = download(central, rid, "alice")
    assert early.status_code == 409
    assert "pending" in early.json()["detail"]

    again = reviews(central, rid, "olga")
    assert again.status_code == 409
    assert "already reviewed" in again.json()["detail"]
    requester = reviews(central, rid, "alice")
    assert requester.status_code == 403
    assert "asked to release" in requester.json()["detail"]
    member = reviews(central, rid, "carol")
    assert member.status_code == 403
    assert "named on" in member.json()["detail"]
    researcher = reviews(central, rid, "eve", role="researcher")
    assert researcher.status_code == 403  # the door: only output checkers review

    second = reviews(central, rid, "otto")
    assert second.status_code == 200
    assert second.json()["state"] == "released"
    got = download(central, rid, "alice")
    assert got.status_code == 200
    assert got.content == SAFE
    # named by site and file: two sites' safe.csv are saved apart
    assert got.headers["content-disposition"].startswith(
        'attachment; filename="site-a_safe.csv"')
    assert download(central, rid, "carol").content == SAFE  # a member of the permit
    outsider = download(central, rid, "eve")
    assert outsider.status_code == 403
    blocked = download(central, rid, "alice", "site-a/small.csv")
    assert blocked.status_code == 403
    assert "3" not in blocked.json()["detail"]  # the checkers' reasons stay theirs
    # ... and a blocked file is refused as one that does not exist: no name is confirmed.
    assert download(central, rid, "alice", "site-a/nothing.csv").json() == blocked.json()
    assert reviews(central, rid, "oleg").status_code == 409  # settled

    assert any("already reviewed" in r for r in denials(central, rid, "airlock.review"))
    assert any("asked to release" in r for r in denials(central, rid, "airlock.review"))
    assert any("named on" in r for r in denials(central, rid, "airlock.review"))
    downloads = denials(central, rid, "airlock.download")
    assert any("pending" in r for r in downloads)
    assert any("only the requester" in r for r in downloads)
    assert any("no released file of that name" in r for r in downloads)
    with central.ctx.sessions() as session:
        released = session.execute(select(CentralAuditEntry.decision).where(
            CentralAuditEntry.action == "airlock.release",
            CentralAuditEntry.object == rid)).scalars().all()
    assert released == ["deny", "allow"]


def test_a_reject_rejects(central, pid, tmp_path):
    rid = submit(central, pid, tmp_path)
    assert reviews(central, rid, "olga").status_code == 200
    resp = reviews(central, rid, "otto", "reject")
    assert resp.status_code == 200
    assert resp.json()["state"] == "rejected"
    refused = download(central, rid, "alice")
    assert refused.status_code == 409
    assert "rejected" in refused.json()["detail"]
    assert denials(central, rid, "airlock.download")


def test_revoking_the_permit_withholds_pending_outputs(central, pid, tmp_path):
    rid = submit(central, pid, tmp_path)
    assert reviews(central, rid, "olga").status_code == 200
    assert hdab(central, pid, "revoke", reason="breach").json()["status"] == "revoked"
    body = central.get(f"/api/v1/airlock/requests/{rid}",
                       headers=central.as_("alice", "researcher")).json()
    assert body["state"] == "withheld"
    refused = download(central, rid, "alice")
    assert refused.status_code == 409
    assert "withheld" in refused.json()["detail"]
    late = reviews(central, rid, "otto")
    assert late.status_code == 409
    assert denials(central, rid, "airlock.download")
    assert denials(central, rid, "airlock.review")


def test_suspending_after_release_stops_downloads(central, pid, tmp_path):
    rid = submit(central, pid, tmp_path)
    reviews(central, rid, "olga")
    assert reviews(central, rid, "otto").json()["state"] == "released"
    assert hdab(central, pid, "suspend").json()["status"] == "suspended"
    refused = download(central, rid, "alice")
    assert refused.status_code == 403
    assert "suspended" in refused.json()["detail"]


def test_an_outsider_does_not_read_a_request(central, pid, tmp_path):
    rid = submit(central, pid, tmp_path)
    resp = central.get(f"/api/v1/airlock/requests/{rid}",
                       headers=central.as_("eve", "researcher"))
    assert resp.status_code == 403
    assert denials(central, rid, "airlock.view")
    assert central.get("/api/v1/airlock/requests/nope",
                       headers=central.as_("olga", "output_checker")).status_code == 404


def test_links_are_listed_never_stored(central, pid, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_bytes(SAFE)
    out = tmp_path / "job-out"
    out.mkdir()
    (out / "safe.csv").write_bytes(SAFE)
    os.symlink(secret, out / "link.csv")
    with session_scope(central.ctx.sessions) as session:
        request = submit_outputs(session, job_id="job-2", node_id="site-a", pid=pid,
                                 requester=uid("alice"), output_dir=out,
                                 storage_dir=central.storage, rules=OutputRules(),
                                 policy=central.ctx.policy)
        rid = request.id
    with central.ctx.sessions() as session:
        files = {f.path: f for f in session.execute(select(AirlockFile).where(
            AirlockFile.request_id == rid)).scalars()}
    assert files["link.csv"].verdict == "blocked"
    assert files["link.csv"].stored_path is None
    assert files["safe.csv"].stored
    assert [p.name for p in (central.storage / rid).rglob("*") if p.is_file()] == ["safe.csv"]


def test_only_the_collector_submits_a_members_outputs(central, pid, tmp_path):
    """policies/airlock `submit`: nothing is stored for anyone but the hub's collector,
    for a permit the centre does not know, or for a job's user not named on it."""
    from spe.airlock.review.decisions import AirlockRefused

    out = tmp_path / "job-out"
    out.mkdir()
    (out / "safe.csv").write_bytes(SAFE)
    cases = [({"id": uid("alice"), "roles": ["researcher"], "institution": None}, pid,
              uid("alice"), "collector"),
             (None, "no-such-permit", uid("alice"), "no such permit"),
             (None, pid, uid("mallory"), "not named on the permit")]
    for submitter, permit, requester, why in cases:
        extra = {} if submitter is None else {"submitter": submitter}
        with pytest.raises(AirlockRefused, match=why), \
                session_scope(central.ctx.sessions) as session:
            submit_outputs(session, job_id="job-x", node_id="site-a", pid=permit,
                           requester=requester, output_dir=out, storage_dir=central.storage,
                           rules=OutputRules(), policy=central.ctx.policy, **extra)
    assert not central.storage.exists() or not any(central.storage.iterdir())
