"""Code an institution vets before it runs there (policies/jobs `code_review`), from the
outside: a real hub and three nodes over mutual TLS, site-a asking its approvers to approve
each code per permit, site-b not. A held job never reaches a worker; its institution's
approver (and nobody else) approves or rejects it at the centre; an approval holds for
the same code under the same permit; every decision is audited at the hub and the node."""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
import time
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from spe.app import create_central_app
from spe.audit import NodeAuditEntry
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.identity import DemoIssuer
from spe.pki import client_ssl_context, private_key_of
from spe.settings import Settings
from spe.wire.code_archive import pack_code
from spe.wire.code_review import REVIEWS_PATH, review_hash
from spe.wire.context import CONTEXT_HEADER, ContextSigner
from tests.gateway.conftest import ISSUER, serve_job_federation
from tests.gateway.test_jobs import LIMITS, job_sites  # noqa: F401  (a fixture)
from tests.gateway.test_permit_tier import issue_permit

pytestmark = pytest.mark.usefixtures("needs_sandbox")

V1 = """
    import pathlib
    n = sum(1 for p in pathlib.Path("/extract/fhir").glob("*.ndjson"))
    pathlib.Path("/output/files.txt").write_text(f"{n}\\n")
    print("fhir files counted")
"""
# The same analysis, changed: another hash, so another review.
V2 = V1.replace('print("fhir files counted")', 'print("fhir files counted, v2")')
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def _pack_once(source: str) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "main.py").write_text(textwrap.dedent(source))
        return pack_code(folder)


#: The one analysis in site-c's registry of approved analyses (SPE_NODE_CODE_REGISTRY).
REGISTERED = _pack_once(V1.replace("counted", "counted (registered)"))


@pytest.fixture(scope="module")
def federation(pki, job_sites, tmp_path_factory):  # noqa: F811
    """site-a vets code (approval by its approvers), site-c runs only code in its registry,
    site-b does not vet code."""
    root = tmp_path_factory.mktemp("code-approval")
    settings = Settings(data_dir=root, oidc_issuer=ISSUER, pki_dir=pki,
                        environment="development", node_workers=1,
                        job_collect_interval_seconds=1)
    with ExitStack() as stack:
        central_db, urls = serve_job_federation(
            stack, settings, job_sites, options={
                "site-a": {"code_review": "approval"},
                "site-c": {"code_review": "registry",
                           "code_registry": (hashlib.sha256(REGISTERED).hexdigest(),)}})
        app = create_central_app(settings.model_copy(update={
            "database_url": central_db, "federation_nodes": urls}))
        issuer = DemoIssuer(settings.issuer_key_path, ISSUER, "spe")
        client = stack.enter_context(TestClient(app))
        client.as_ = lambda user, role, inst=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}
        client.data_dir = root  # type: ignore[attr-defined]
        client.urls, client.pki = urls, pki  # type: ignore[attr-defined]
        yield client, job_sites


@pytest.fixture(scope="module")
def permit(federation) -> str:
    hub, _ = federation
    return issue_permit(hub)  # over site-a and site-b, for carol (alice applied)


def _packed(tmp: Path, source: str) -> tuple[str, str]:
    folder = tmp / f"code-{time.monotonic_ns()}"
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(source))
    code = pack_code(folder)
    return base64.b64encode(code).decode(), hashlib.sha256(code).hexdigest()


def _submit(hub, pid: str, code: str) -> dict:
    resp = hub.post("/api/v1/jobs", json={"permit": pid, "code": code, "entry": "main.py",
                                          "limits": LIMITS},
                    headers=hub.as_("carol", "researcher"))
    assert resp.status_code == 202, resp.text
    return resp.json()


def _wait(hub, job_id: str, done, seconds: float = 120.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        resp = hub.get(f"/api/v1/jobs/{job_id}", headers=hub.as_("carol", "researcher"))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def _site(body: dict, site: str) -> dict:
    return next(n for n in body["nodes"] if n["node_id"] == site)


def _ended(site: str):
    return lambda b: _site(b, site)["state"] in FINAL


def _review_path(pid: str, digest: str, site: str = "site-a") -> str:
    return f"/api/v1/code-reviews/{site}/{pid}/{digest}"


def _node_audit(db: Path, action: str) -> list[NodeAuditEntry]:
    engine = make_engine(f"sqlite:///{db}")
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            rows = list(session.execute(select(NodeAuditEntry)
                                        .where(NodeAuditEntry.action == action)).scalars())
            for row in rows:
                session.expunge(row)
            return rows
    finally:
        engine.dispose()


def _central_audit(hub) -> list[dict]:
    entries: list[dict] = []
    while True:
        page = hub.get("/api/v1/audit", params={"after": entries[-1]["seq"] if entries else 0,
                                                "limit": 1000},
                       headers=hub.as_("root", "admin"))
        assert page.status_code == 200, page.text
        entries += page.json()
        if len(page.json()) < 1000:  # the last page (each read adds its own door entry)
            return entries


def test_held_code_runs_once_its_institution_approves_and_changed_code_is_held_again(
        federation, permit, tmp_path):
    hub, dbs = federation
    bob = hub.as_("bob", "approver", "site-a")
    code, digest = _packed(tmp_path, V1)
    job = _submit(hub, permit, code)
    assert job["code_sha256"] == digest

    # site-b does not vet code: it runs at once; site-a holds it with the reason.
    body = _wait(hub, job["id"], _ended("site-b"))
    assert _site(body, "site-b")["state"] == "succeeded"
    held = _site(body, "site-a")
    assert held["state"] == "awaiting_approval", held
    assert held["reason"] == (f"the code (sha256 {digest}) awaits approval by site-a's "
                              "approvers")
    time.sleep(2)  # a worker that took held jobs would have by now
    held = _site(_wait(hub, job["id"], lambda b: True), "site-a")
    assert held["state"] == "awaiting_approval"
    assert held["attempts"] == 0
    # The worker never ran it: no work folder, no outputs.
    assert not (hub.data_dir / "jobs" / "site-a" / held["job_id"]).exists()

    # site-a's approver sees it waiting, with its files and no earlier version.
    waiting = hub.get("/api/v1/code-reviews", headers=bob)
    assert waiting.status_code == 200, waiting.text
    mine = [r for r in waiting.json() if r["code_sha256"] == digest]
    assert len(mine) == 1
    assert mine[0]["pid"] == permit
    assert mine[0]["researchers"] == [f"carol@{ISSUER}"]
    assert [j["job_id"] for j in mine[0]["jobs"]] == [held["job_id"]]
    detail = hub.get(_review_path(permit, digest), headers=bob)
    assert detail.status_code == 200, detail.text
    files = {f["path"]: f for f in detail.json()["files"]}
    assert "fhir files counted" in files["main.py"]["text"]
    assert detail.json()["previous_sha256"] is None
    assert detail.json()["diff"] == ""

    approved = hub.post(_review_path(permit, digest), headers=bob,
                        json={"decision": "approve", "reason": "reads only what it counts"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["released"] == [held["job_id"]]
    body = _wait(hub, job["id"], _ended("site-a"))
    assert _site(body, "site-a")["state"] == "succeeded", body
    assert _site(body, "site-a")["reason"] == ""

    # The same code under the same permit runs without another approval.
    again = _submit(hub, permit, code)
    body = _wait(hub, again["id"], lambda b: all(n["state"] in FINAL for n in b["nodes"]))
    assert {n["node_id"]: n["state"] for n in body["nodes"]} == {
        "site-a": "succeeded", "site-b": "succeeded"}
    submits = [json.loads(e.details) for e in _node_audit(dbs["site-a"], "job.submit")
               if e.decision == "allow"]
    assert [s["held"] for s in submits if s.get("code_sha256") == digest] == [True, False]

    # Changed code is held again, and its review shows the diff against v1.
    code2, digest2 = _packed(tmp_path, V2)
    changed = _submit(hub, permit, code2)
    body = _wait(hub, changed["id"], lambda b: _site(b, "site-a")["state"] != "queued")
    assert _site(body, "site-a")["state"] == "awaiting_approval"
    assert digest2 in _site(body, "site-a")["reason"]
    detail = hub.get(_review_path(permit, digest2), headers=bob).json()
    assert detail["previous_sha256"] == digest
    assert "-print(\"fhir files counted\")" in detail["diff"]
    assert "+print(\"fhir files counted, v2\")" in detail["diff"]
    assert [d["decision"] for d in detail["decisions"]] == ["approve"]

    # A rejection fails the held job with the approver's reason.
    rejected = hub.post(_review_path(permit, digest2), headers=bob,
                        json={"decision": "reject", "reason": "prints more than it needs"})
    assert rejected.status_code == 200, rejected.text
    body = _wait(hub, changed["id"], _ended("site-a"))
    part = _site(body, "site-a")
    assert part["state"] == "failed"
    assert part["reason"] == (f"the code (sha256 {digest2}) was rejected by site-a's "
                              "approvers: prints more than it needs")
    # ... and the same rejected code is refused at once by site-a.
    refused = _submit(hub, permit, code2)
    outcome = _site(refused, "site-a")
    assert outcome["job_id"] is None
    assert "rejected by site-a's approvers" in outcome["submitted"]

    # Every decision is audited at the node (who, which code, which permit) and the hub.
    decided = [(e.actor, json.loads(e.details)) for e in
               _node_audit(dbs["site-a"], "code.review.decide") if e.decision == "allow"]
    assert [(a, d["code_sha256"], d["permit"], d["decision"]) for a, d in decided] == [
        (f"bob@{ISSUER}", digest, permit, "approve"),
        (f"bob@{ISSUER}", digest2, permit, "reject")]
    central = [e for e in _central_audit(hub)
               if e["action"] == "code.review.decide" and e["decision"] == "allow"]
    assert [(e["actor"], e["object"]) for e in central] == [
        (f"bob@{ISSUER}", f"code:{digest}"), (f"bob@{ISSUER}", f"code:{digest2}")]
    assert central[0]["reason"] == "approve at site-a: reads only what it counts"
    assert central[1]["reason"] == "reject at site-a: prints more than it needs"


def test_only_the_institutions_approvers_decide_and_never_on_their_own_code(
        federation, permit, tmp_path):
    hub, dbs = federation
    code, digest = _packed(tmp_path, V1.replace("counted", "counted (access)"))
    job = _submit(hub, permit, code)
    _wait(hub, job["id"], lambda b: _site(b, "site-a")["state"] == "awaiting_approval",
          seconds=30)
    approve = {"decision": "approve", "reason": "fine"}
    tries = {
        "an approver of another institution": hub.as_("bea", "approver", "site-b"),
        "the researcher": hub.as_("carol", "researcher"),
        "the researcher as an approver": hub.as_("carol", "approver", "site-a"),
        "the permit's applicant as an approver": hub.as_("alice", "approver", "site-a"),
        "an output checker": hub.as_("olga", "output_checker"),
    }
    for who, headers in tries.items():
        resp = hub.post(_review_path(permit, digest), json=approve, headers=headers)
        assert resp.status_code == 403, (who, resp.text)
        assert hub.get(_review_path(permit, digest), headers=headers).status_code == 403, who
    # The hub's own check refused them; the node holds its own: hub-signed contexts sent
    # straight to site-a for anyone but its approvers are refused there too.
    signer = ContextSigner(private_key_of(hub.pki / "hub.key"))
    with httpx.Client(base_url=hub.urls["site-a"], timeout=10,
                      verify=client_ssl_context(hub.pki, "hub")) as node:
        def at_node(user: str, roles: list[str], inst: str | None) -> httpx.Response:
            context = signer.sign(
                user=f"{user}@{ISSUER}", roles=roles, tier="permit", node_id="site-a",
                permit=permit, institution=inst,
                query_hash=review_hash("decide", permit, digest, "approve", "fine"))
            return node.post(f"{REVIEWS_PATH}/{permit}/{digest}", json=approve,
                             headers={CONTEXT_HEADER: context})

        for user, roles, inst in (("bea", ["approver"], "site-b"),
                                  ("carol", ["approver"], "site-a"),
                                  ("alice", ["approver"], "site-a"),
                                  ("mallory", ["researcher"], "site-a"),
                                  ("anna", ["approver"], None)):
            resp = at_node(user, roles, inst)
            assert resp.status_code == 403, (user, resp.text)
        # A context for another decision than the one sent is not taken either.
        context = signer.sign(user=f"bob@{ISSUER}", roles=["approver"], tier="permit",
                              node_id="site-a", permit=permit, institution="site-a",
                              query_hash=review_hash("decide", permit, digest, "reject",
                                                     "fine"))
        assert node.post(f"{REVIEWS_PATH}/{permit}/{digest}", json=approve,
                         headers={CONTEXT_HEADER: context}).status_code == 401
    node_denials = [e for e in _node_audit(dbs["site-a"], "code.review.decide")
                    if e.decision == "deny"]
    assert {e.actor for e in node_denials} >= {f"bea@{ISSUER}", f"carol@{ISSUER}",
                                                 f"alice@{ISSUER}"}
    assert "site-a's approvers" in hub.post(
        _review_path(permit, digest), json=approve,
        headers=hub.as_("bea", "approver", "site-b")).json()["detail"]
    # Another institution's approver sees nothing of site-a's queue.
    other = hub.get("/api/v1/code-reviews", headers=hub.as_("bea", "approver", "site-b"))
    assert other.status_code == 200
    assert all(r["node_id"] == "site-b" for r in other.json())
    # Still held: nobody above decided.
    body = _wait(hub, job["id"], lambda b: True)
    assert _site(body, "site-a")["state"] == "awaiting_approval"
    # Bad input is a 4xx with a reason, never a 500.
    bob = hub.as_("bob", "approver", "site-a")
    assert hub.post(_review_path(permit, digest), json={"decision": "maybe", "reason": "x"},
                    headers=bob).status_code == 422
    assert hub.post(_review_path(permit, "0" * 64), json=approve,
                    headers=bob).status_code == 404
    assert hub.get(f"/api/v1/code-reviews/site-a/{permit}/not-a-hash",
                   headers=bob).status_code == 422
    # The researcher may cancel a held job; it never runs.
    cancelled = hub.post(f"/api/v1/jobs/{job['id']}/cancel",
                         headers=hub.as_("carol", "researcher"))
    assert cancelled.status_code == 200, cancelled.text
    assert _site(cancelled.json(), "site-a")["state"] == "cancelled"
    late = hub.post(_review_path(permit, digest), json=approve, headers=bob)
    assert late.status_code == 404, late.text  # nothing of that code awaits review
    # Denials were audited at the hub, each with its reason.
    refusals = [e for e in _central_audit(hub) if e["action"] == "code.review.decide"
                and e["decision"] == "deny"]
    assert any(e["actor"] == f"bea@{ISSUER}" and "site-a's approvers" in e["reason"]
               for e in refusals)
    assert any(e["actor"] == f"carol@{ISSUER}" and "own code" not in e["reason"]
               for e in refusals)


def test_a_registry_node_runs_only_registered_code(federation, tmp_path):
    hub, _ = federation
    alice = hub.as_("alice", "researcher")
    body = {"organisation": "Uni", "title": "Registry", "summary": "s",
            "purpose": "scientific_research", "declaration": True,
            "start_date": str(date.today()), "end_date": str(date.today() + timedelta(days=9)),
            "members": [f"carol@{ISSUER}"], "datasets": ["site-c/imaging-and-clinical-records"]}
    pid = hub.post("/api/v1/permits", json=body, headers=alice).json()["id"]
    hub.post(f"/api/v1/permits/{pid}/submit", headers=alice)
    hub.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
             headers=hub.as_("cid", "approver", "site-c"))
    issued = hub.post(f"/api/v1/permits/{pid}/issue", json={"reason": "ok"},
                      headers=hub.as_("hilde", "hdab"))
    assert issued.status_code == 200, issued.text

    job = _submit(hub, pid, base64.b64encode(REGISTERED).decode())
    body = _wait(hub, job["id"], _ended("site-c"))
    assert _site(body, "site-c")["state"] == "succeeded", body
    code, digest = _packed(tmp_path, V2)
    refused = hub.post("/api/v1/jobs", json={"permit": pid, "code": code, "entry": "main.py",
                                             "limits": LIMITS},
                       headers=hub.as_("carol", "researcher"))
    assert refused.status_code == 403, refused.text
    assert (f"the code (sha256 {digest}) is not in site-c's registry of approved analyses"
            in refused.json()["detail"])
