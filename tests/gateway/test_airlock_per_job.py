"""One airlock request per job, through the collector and the API, as the researcher and
two output checkers: a section per site; a site arriving after reviews started voids them;
a request whose every file is blocked is closed at once with its reasons for the
researcher (the API and `spe job outputs`); a checker reviews once; downloads are named by
site and file. Existing per-site requests stay readable after the migration."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from gateway.hub.collect import _record
from gateway.node.orthanc_process import free_port
from spe.app import create_central_app
from spe.db import make_engine, session_scope
from spe.db.migrate import upgrade
from spe.identity import demo_issuer
from spe.jobs.models import CentralJob
from spe.settings import Settings
from spe.wire.outputs import JobOutputs, OutputFile
from tests.central import catalogued_central
from tests.spe.test_airlock_review import pid  # noqa: F401 - fixture
from tests.spe.test_permits import uid

SAFE = b"sex,patients\nF,25\nM,31\n"
SMALL = b"sex,patients\nF,3\nM,40\n"
CHECKERS = ("olga", "otto")


@pytest.fixture
def central(database_url: str, tmp_path: Path, pki: Path):
    """The centre as hub of two sites that do not answer (their parts are collected here
    by calling the collector, as if they had): enough for `/api/v1/jobs/{id}/outputs`."""
    catalogued_central(database_url, ("site-a", "site-b"), patients=100, conditions={"C71": 20})
    dead = {site: f"https://127.0.0.1:{free_port()}" for site in ("site-a", "site-b")}
    settings = Settings(data_dir=tmp_path, database_url=database_url,
                        oidc_issuer="http://central.test", pki_dir=pki,
                        federation_nodes=dead, job_collect_interval_seconds=3600)
    app = create_central_app(settings)
    issuer = demo_issuer(settings)
    with TestClient(app, base_url="http://central.test") as client:
        client.as_ = lambda user, role, institution=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=institution)}
        client.ctx = app.state.ctx  # type: ignore[attr-defined]
        yield client


def new_job(central, pid: str, sites=("site-a", "site-b")) -> str:  # noqa: F811
    job_id = uuid.uuid4().hex
    with session_scope(central.ctx.sessions) as session:
        session.add(CentralJob(
            id=job_id, pid=pid, user_id=uid("carol"), code_sha256="0" * 64, entry="main.py",
            limits={}, created_at=datetime.now(UTC),
            nodes={s: {"job_id": f"{s}-{job_id[:8]}", "outcome": "queued"} for s in sites}))
    return job_id


def arrive(central, job_id: str, pid: str, site: str,  # noqa: F811
           files: dict[str, bytes]) -> str | None:
    """`site`'s outputs reach the centre (the hub's collector, as after a status read)."""
    node_job = f"{site}-{job_id[:8]}"
    outputs = JobOutputs(
        job_id=node_job, node_id=site, pid=pid, user_id=uid("carol"), verdict="pass",
        report=[{"path": p, "verdict": "pass", "size": len(d)} for p, d in files.items()],
        files=[OutputFile(path=p, sha256=hashlib.sha256(d).hexdigest(),
                          data=base64.b64encode(d).decode()) for p, d in files.items()])
    return _record(central.ctx, job_id, site, outputs, "collected")


def as_checker(central, rid: str, who: str = "olga") -> dict:
    resp = central.get(f"/api/v1/airlock/requests/{rid}",
                       headers=central.as_(who, "output_checker"))
    assert resp.status_code == 200, resp.text
    return resp.json()


def review(central, rid: str, who: str, decision: str = "approve"):
    return central.post(f"/api/v1/airlock/requests/{rid}/reviews",
                        json={"decision": decision, "reason": f"{who} looked"},
                        headers=central.as_(who, "output_checker"))


def job_outputs(central, job_id: str) -> list[dict]:
    resp = central.get(f"/api/v1/jobs/{job_id}/outputs",
                       headers=central.as_("carol", "researcher"))
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_one_request_per_job_with_a_section_per_site(central, pid):  # noqa: F811
    job_id = new_job(central, pid)
    rid = arrive(central, job_id, pid, "site-a", {"results.csv": SAFE})
    assert rid
    body = as_checker(central, rid)
    assert body["awaiting"] == ["site-b"]
    assert [s["node_id"] for s in body["sites"]] == ["site-a"]

    # Both checkers approve site-a's part: nothing is released while site-b is awaited.
    assert review(central, rid, "olga").status_code == 200
    second = review(central, rid, "otto")
    assert second.status_code == 200, second.text
    assert second.json()["state"] == "pending"

    # site-b's outputs join the same request and void the reviews so far.
    assert arrive(central, job_id, pid, "site-b", {"results.csv": SAFE,
                                                   "small.csv": SMALL}) == rid
    outputs = job_outputs(central, job_id)
    assert [r["id"] for r in outputs] == [rid]  # one request for the job
    mine = outputs[0]
    assert mine["state"] == "pending"
    assert mine["reviews"] == []
    assert {v["reviewer"] for v in mine["void_reviews"]} == {uid(c) for c in CHECKERS}
    assert "site-b" in mine["review_note"]
    assert "void" in mine["review_note"]
    assert mine["review_round"] == 2
    assert mine["files"] == []  # nothing named to the researcher before release
    body = as_checker(central, rid)
    assert [s["node_id"] for s in body["sites"]] == ["site-a", "site-b"]
    assert body["awaiting"] == []
    assert sorted(f["name"] for f in body["files"]) == [
        "site-a/results.csv", "site-b/results.csv", "site-b/small.csv"]
    inspected = central.get(f"/api/v1/airlock/requests/{rid}/inspect/site-b/results.csv",
                            headers=central.as_("olga", "output_checker"))
    assert inspected.status_code == 200
    assert inspected.content == SAFE

    # The same checkers review again, each once.
    assert review(central, rid, "olga").status_code == 200
    again = review(central, rid, "olga", "reject")
    assert again.status_code == 409
    assert "already reviewed" in again.json()["detail"]
    released = review(central, rid, "otto")
    assert released.json()["state"] == "released"
    late = review(central, rid, "oleg")
    assert late.status_code == 409
    assert "released" in late.json()["detail"]

    # Downloads are named by site and file.
    for site in ("site-a", "site-b"):
        got = central.get(f"/api/v1/airlock/requests/{rid}/files/{site}/results.csv",
                          headers=central.as_("carol", "researcher"))
        assert got.status_code == 200, got.text
        assert got.content == SAFE
        assert got.headers["content-disposition"].startswith(
            f'attachment; filename="{site}_results.csv"')
    names = {f["name"] for f in job_outputs(central, job_id)[0]["files"]}
    assert names == {"site-a/results.csv", "site-b/results.csv"}


def test_a_request_whose_every_file_is_blocked_is_closed_with_its_reasons(
        central, pid, tmp_path, monkeypatch):  # noqa: F811
    job_id = new_job(central, pid, sites=("site-a",))
    rid = arrive(central, job_id, pid, "site-a", {"small.csv": SMALL,
                                                  "bad\x07name.csv": SAFE})
    assert rid
    mine = job_outputs(central, job_id)[0]
    assert mine["state"] == "closed"
    assert mine["decided_at"]
    # Each file with the rules that blocked it; nothing the job chose (names, sizes).
    files = {f["name"]: f for f in mine["files"]}
    assert set(files) == {"site-a/file 1", "site-a/file 2"}
    reasons = [files["site-a/file 1"]["reasons"], files["site-a/file 2"]["reasons"]]
    assert any("control characters" in r for r in reasons[0])  # "bad\x07name.csv"
    assert reasons[1] == ["1 count below the threshold of 10: row 2, column 2"]
    assert "small.csv" not in str(mine)
    # (Not a bare "bad": the request's random hex id may hold it.)
    assert "bad\x07" not in str(mine)
    assert "name.csv" not in str(mine)
    assert "3" not in str(reasons)  # the rule and place, not the count
    assert {f["size"] for f in mine["files"]} == {0}
    assert not any(f["stored"] for f in mine["files"])

    # Nobody is asked to review it, and nothing leaves.
    queue = central.get("/api/v1/airlock/requests", headers=central.as_("olga",
                                                                        "output_checker"))
    assert rid not in [r["id"] for r in queue.json()]
    refused = review(central, rid, "olga")
    assert refused.status_code == 409
    assert "closed" in refused.json()["detail"]
    got = central.get(f"/api/v1/airlock/requests/{rid}/files/site-a/small.csv",
                      headers=central.as_("carol", "researcher"))
    assert got.status_code == 409

    # The researcher reads the same in `spe job outputs`.
    from typer.testing import CliRunner

    import spe.cli.http
    from spe.cli.main import app

    def through_test_client(method, url, *, json=None, params=None, timeout=None,
                            headers=None):
        return central.request(method, url, json=json, params=params, headers=headers)

    monkeypatch.setattr(spe.cli.http.httpx, "request", through_test_client)
    token = central.as_("carol", "researcher")["Authorization"].split()[1]
    shown = CliRunner().invoke(app, ["job", "outputs", job_id], env={
        "COLUMNS": "200", "SPE_HUB_URL": "http://central.test", "SPE_TOKEN": token})
    assert shown.exit_code == 0, shown.output
    assert f"request {rid}: closed" in shown.output
    assert "every file was blocked" in shown.output
    assert "site-a/file 2" in shown.output
    assert "small.csv" not in shown.output
    assert "1 count below the threshold of 10" in shown.output
    fetched = CliRunner().invoke(app, ["job", "download", job_id, "--to",
                                       str(tmp_path / "out")], env={
        "COLUMNS": "200", "SPE_HUB_URL": "http://central.test", "SPE_TOKEN": token})
    assert fetched.exit_code == 1
    assert "closed" in fetched.output


def test_a_blocked_site_does_not_close_a_request_still_awaiting_another(
        central, pid):  # noqa: F811
    job_id = new_job(central, pid)
    rid = arrive(central, job_id, pid, "site-a", {"small.csv": SMALL})
    assert job_outputs(central, job_id)[0]["state"] == "pending"
    arrive(central, job_id, pid, "site-b", {"results.csv": SAFE})
    body = as_checker(central, rid)
    assert body["state"] == "pending"  # site-b's file is for the checkers
    assert body["review_note"] is None  # no review had started: nothing void


def test_cli_downloads_into_a_folder_per_site(
        central, pid, tmp_path, monkeypatch):  # noqa: F811
    job_id = new_job(central, pid)
    rid = arrive(central, job_id, pid, "site-a", {"results.csv": SAFE})
    arrive(central, job_id, pid, "site-b", {"results.csv": SAFE.replace(b"25", b"26")})
    for who in CHECKERS:
        assert review(central, rid, who).status_code == 200
    from typer.testing import CliRunner

    import spe.cli.http
    from spe.cli.main import app

    def through_test_client(method, url, *, json=None, params=None, timeout=None,
                            headers=None):
        return central.request(method, url, json=json, params=params, headers=headers)

    monkeypatch.setattr(spe.cli.http.httpx, "request", through_test_client)
    token = central.as_("carol", "researcher")["Authorization"].split()[1]
    env = {"COLUMNS": "200", "SPE_HUB_URL": "http://central.test", "SPE_TOKEN": token}
    fetched = CliRunner().invoke(app, ["job", "download", job_id, "--to",
                                       str(tmp_path / "out")], env=env)
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "out" / "site-a" / "results.csv").read_bytes() == SAFE
    assert b"26" in (tmp_path / "out" / "site-b" / "results.csv").read_bytes()
    shown = CliRunner().invoke(app, ["job", "outputs", job_id], env=env)
    assert "site-a/results.csv" in shown.output
    assert "site-b/results.csv" in shown.output


def test_a_permit_member_downloads_anothers_job_with_the_cli(
        central, pid, tmp_path, monkeypatch):  # noqa: F811
    """carol ran the job; alice, the permit's applicant and so a member, may download its
    released outputs from the airlock, and `spe job download` lets her (it refused her at
    the job: "the job is another user's"). A stranger is refused with the reason
    and gets nothing."""
    job_id = new_job(central, pid)
    rid = arrive(central, job_id, pid, "site-a", {"results.csv": SAFE})
    arrive(central, job_id, pid, "site-b", {"results.csv": SAFE.replace(b"25", b"26")})
    for who in CHECKERS:
        assert review(central, rid, who).status_code == 200
    direct = central.get(f"/api/v1/airlock/requests/{rid}/files/site-a/results.csv",
                         headers=central.as_("alice", "researcher"))
    assert direct.status_code == 200, direct.text  # what the airlock's API allows her
    from typer.testing import CliRunner

    import spe.cli.http
    from spe.cli.main import app

    def through_test_client(method, url, *, json=None, params=None, timeout=None,
                            headers=None):
        return central.request(method, url, json=json, params=params, headers=headers)

    monkeypatch.setattr(spe.cli.http.httpx, "request", through_test_client)

    def download(user: str, to: Path):
        token = central.as_(user, "researcher")["Authorization"].split()[1]
        return CliRunner().invoke(app, ["job", "download", job_id, "--to", str(to)], env={
            "COLUMNS": "200", "SPE_HUB_URL": "http://central.test", "SPE_TOKEN": token})

    fetched = download("alice", tmp_path / "alice")
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "alice" / "site-a" / "results.csv").read_bytes() == SAFE
    assert b"26" in (tmp_path / "alice" / "site-b" / "results.csv").read_bytes()
    refused = download("mallory", tmp_path / "mallory")
    assert refused.exit_code == 1, refused.output
    assert "member of its permit" in refused.output
    assert "Traceback" not in refused.output
    assert not (tmp_path / "mallory").exists() or not any((tmp_path / "mallory").rglob("*"))


def test_per_site_requests_from_before_stay_readable(database_url, tmp_path, pki):
    """Migration 0010: a request of the per-site airlock (0009) keeps its files, reviews
    and state, as a request with one site."""
    upgrade(database_url, "central", "0009")
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO airlock_requests (id, job_id, node_id, pid, requester, created_at, "
            "state, reasons) VALUES ('r1', 'job-old', 'site-b', 'P-1', 'carol', :now, "
            "'pending', '[]')"), {"now": now})
        conn.execute(text(
            "INSERT INTO airlock_files (request_id, path, size, kind, verdict, reasons, "
            "notes, places, stored) VALUES ('r1', 'counts.csv', 3, 'table', 'pass', '[]', "
            "'[]', '[]', false)"))
        conn.execute(text(
            "INSERT INTO airlock_reviews (request_id, reviewer, decision, reason, at) "
            "VALUES ('r1', 'olga', 'approve', '', :now)"), {"now": now})
    engine.dispose()
    catalogued_central(database_url, ("site-a", "site-b"), patients=100)
    settings = Settings(data_dir=tmp_path, database_url=database_url,
                        oidc_issuer="http://central.test")
    app = create_central_app(settings)
    issuer = demo_issuer(settings)
    with TestClient(app, base_url="http://central.test") as client:
        resp = client.get("/api/v1/airlock/requests/r1", headers={
            "Authorization": "Bearer " + issuer.mint("olga", ["output_checker"])})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [s["node_id"] for s in body["sites"]] == ["site-b"]
    assert [f["name"] for f in body["files"]] == ["site-b/counts.csv"]
    assert [(r["reviewer"], r["decision"]) for r in body["reviews"]] == [("olga", "approve")]
    assert body["void_reviews"] == []
    assert body["review_round"] == 1
