"""Data permits through the API, as the people involved (and those who try what they may
not) would use it. Every refusal carries a reason and is in the audit log."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from spe.app import create_central_app
from spe.audit import CentralAuditEntry
from spe.identity import demo_issuer
from spe.settings import Settings
from tests.central import catalogued_central

DATASET_A = "site-a/imaging-and-clinical-records"
DATASET_B = "site-b/imaging-and-clinical-records"


@pytest.fixture
def central(database_url: str, tmp_path: Path):
    catalogued_central(database_url, ("site-a", "site-b", "site-c"), patients=100,
                       conditions={"C71": 20})
    settings = Settings(data_dir=tmp_path, database_url=database_url,
                        oidc_issuer="http://central.test")
    app = create_central_app(settings)
    issuer = demo_issuer(settings)
    with TestClient(app, base_url="http://central.test") as client:
        client.as_ = lambda user, role, institution=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=institution)}
        client.ctx = app.state.ctx  # type: ignore[attr-defined]
        yield client


def uid(user: str) -> str:
    return f"{user}@http://central.test"


def application(**changes) -> dict:
    body = {
        "organisation": "University of Somewhere", "title": "Glioma imaging outcomes",
        "summary": "Survival after glioma resection, by MR features.",
        "purpose": "scientific_research", "declaration": True,
        "legal_basis": "GDPR Art. 9(2)(j)", "form": "anonymised",
        "ethics_reference": "EC-2026-117",
        "start_date": str(date.today()), "end_date": str(date.today() + timedelta(days=365)),
        "members": [uid("carol")], "datasets": [DATASET_A, DATASET_B],
    }
    return {**body, **changes}


def apply_and_submit(client, **changes) -> str:
    resp = client.post("/api/v1/permits", json=application(**changes),
                       headers=client.as_("alice", "researcher"))
    assert resp.status_code == 201, resp.text
    pid = resp.json()["id"]
    resp = client.post(f"/api/v1/permits/{pid}/submit", headers=client.as_("alice", "researcher"))
    assert resp.status_code == 200, resp.text
    return pid


def review(client, pid: str, user: str, institution: str, decision: str = "approve",
           reason: str = ""):
    return client.post(f"/api/v1/permits/{pid}/reviews",
                       json={"decision": decision, "reason": reason},
                       headers=client.as_(user, "approver", institution))


def hdab(client, pid: str, action: str, user: str = "hilde", reason: str = ""):
    return client.post(f"/api/v1/permits/{pid}/{action}", json={"reason": reason},
                       headers=client.as_(user, "hdab"))


def denied(client, action: str, pid: str) -> list[str]:
    with client.ctx.sessions() as session:
        return list(session.execute(select(CentralAuditEntry.reason).where(
            CentralAuditEntry.action == action, CentralAuditEntry.object == pid,
            CentralAuditEntry.decision == "deny")).scalars())


def test_the_whole_path_to_an_active_permit_and_its_history(central):
    pid = apply_and_submit(central)
    body = central.get(f"/api/v1/permits/{pid}", headers=central.as_("alice", "researcher")).json()
    assert body["status"] == "submitted"
    assert body["waiting_for"] == ["site-a", "site-b"]
    notes = central.get("/api/v1/notifications",
                        headers=central.as_("bob", "approver", "site-a")).json()
    assert any(pid in n["message"] for n in notes)
    assert review(central, pid, "bob", "site-a").json()["status"] == "submitted"
    assert review(central, pid, "bea", "site-b").json()["status"] == "approved"
    issued = hdab(central, pid, "issue", reason="meets Art. 68").json()
    assert issued["status"] == "active"
    actions = [e["action"] for e in issued["events"]]
    assert actions == ["create", "submit", "review:approve", "review:approve", "issue"]
    mine = central.get("/api/v1/permits?mine=true", headers=central.as_("carol", "researcher"))
    assert [p["id"] for p in mine.json()] == [pid]


def test_approving_ones_own_application_is_refused(central):
    pid = apply_and_submit(central)
    resp = central.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                        headers={"Authorization": central.as_("carol", "approver", "site-a")[
                            "Authorization"]})
    assert resp.status_code == 403
    assert "named on" in resp.json()["detail"]
    assert any("named on" in r for r in denied(central, "permit.review", pid))


def test_approving_for_another_institution_is_refused(central):
    pid = apply_and_submit(central)
    resp = review(central, pid, "zoe", "site-c")
    assert resp.status_code == 403
    assert "holding a requested dataset" in resp.json()["detail"]
    assert denied(central, "permit.review", pid)


def test_approving_twice_is_a_conflict(central):
    pid = apply_and_submit(central)
    assert review(central, pid, "bob", "site-a").status_code == 200
    again = review(central, pid, "bob2", "site-a")
    assert again.status_code == 409
    assert "already reviewed" in again.json()["detail"]
    assert denied(central, "permit.review", pid)


def test_issuing_before_every_institution_approved_is_a_conflict(central):
    pid = apply_and_submit(central)
    review(central, pid, "bob", "site-a")
    resp = hdab(central, pid, "issue")
    assert resp.status_code == 409
    assert "must approve" in resp.json()["detail"]
    assert denied(central, "permit.issue", pid)
    assert hdab(central, pid, "issue", user="alice").status_code == 403  # not the hdab role


def test_acting_on_an_expired_permit_is_refused(central):
    start = date.today() - timedelta(days=30)
    pid = apply_and_submit(central, start_date=str(start),
                           end_date=str(start + timedelta(days=10)))
    review(central, pid, "bob", "site-a")
    review(central, pid, "bea", "site-b")
    assert hdab(central, pid, "issue").json()["status"] == "expired"
    resp = hdab(central, pid, "suspend")
    assert resp.status_code == 409
    assert "expired" in resp.json()["detail"]
    query = central.post(f"/api/v1/query?permit={pid}", json={"where": {
        "type": "patient", "sex": "female"}}, headers=central.as_("alice", "researcher"))
    assert query.status_code == 403
    assert "expired" in query.json()["detail"]
    assert denied(central, "permit.use", pid)


def test_someone_not_named_on_the_permit_may_not_query_under_it(central):
    pid = apply_and_submit(central)
    review(central, pid, "bob", "site-a")
    review(central, pid, "bea", "site-b")
    hdab(central, pid, "issue")
    resp = central.post(f"/api/v1/query?permit={pid}", json={"where": {
        "type": "patient", "sex": "female"}}, headers=central.as_("mallory", "researcher"))
    assert resp.status_code == 403
    assert "not named" in resp.json()["detail"]
    assert any("not named" in r for r in denied(central, "permit.use", pid))
    hidden = central.get(f"/api/v1/permits/{pid}", headers=central.as_("mallory", "researcher"))
    assert hidden.status_code == 403


def test_pseudonymised_without_justification_is_refused(central):
    resp = central.post("/api/v1/permits", json=application(form="pseudonymised"),
                        headers=central.as_("alice", "researcher"))
    pid = resp.json()["id"]
    submit = central.post(f"/api/v1/permits/{pid}/submit",
                          headers=central.as_("alice", "researcher"))
    assert submit.status_code == 409
    assert "Art. 66" in submit.json()["detail"]
    assert denied(central, "permit.submit", pid)
    fixed = central.patch(f"/api/v1/permits/{pid}", json={
        "justification": "linking imaging to outcomes needs stable pseudonyms"},
        headers=central.as_("alice", "researcher"))
    assert fixed.status_code == 200
    assert central.post(f"/api/v1/permits/{pid}/submit",
                        headers=central.as_("alice", "researcher")).status_code == 200


def test_only_the_applicant_edits_and_only_drafts(central):
    resp = central.post("/api/v1/permits", json=application(),
                        headers=central.as_("alice", "researcher"))
    pid = resp.json()["id"]
    other = central.patch(f"/api/v1/permits/{pid}", json={"title": "Mine now"},
                          headers=central.as_("carol", "researcher"))
    assert other.status_code == 403
    central.post(f"/api/v1/permits/{pid}/submit", headers=central.as_("alice", "researcher"))
    late = central.patch(f"/api/v1/permits/{pid}", json={"title": "Too late"},
                         headers=central.as_("alice", "researcher"))
    assert late.status_code == 409


def test_changes_requested_go_back_to_every_institution(central):
    pid = apply_and_submit(central)
    review(central, pid, "bob", "site-a")
    asked = review(central, pid, "bea", "site-b", "changes", "name the imaging protocol")
    assert asked.json()["status"] == "changes_requested"
    assert review(central, pid, "bea", "site-b", "changes").status_code == 422  # no reason
    central.patch(f"/api/v1/permits/{pid}", json={"summary": "MR protocol T1c, FLAIR."},
                  headers=central.as_("alice", "researcher"))
    again = central.post(f"/api/v1/permits/{pid}/submit",
                         headers=central.as_("alice", "researcher")).json()
    assert again["revision"] == 2
    assert again["waiting_for"] == ["site-a", "site-b"]


def test_bad_applications_get_a_clear_422(central):
    for body, says in ((application(purpose="marketing"), "purpose"),
                       (application(end_date="2000-01-01"), "end_date"),
                       (application(datasets=["nowhere/x"]), "no dataset")):
        resp = central.post("/api/v1/permits", json=body, headers=central.as_("alice",
                                                                              "researcher"))
        assert resp.status_code == 422, resp.text
        assert says in resp.text
    assert central.post("/api/v1/permits", json=application(),
                        headers=central.as_("hilde", "hdab")).status_code == 403


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping what it receives."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received = []

    class Keep(Message):
        def handle_message(self, message):
            received.append(message)

    from tests.servers import bind

    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def test_the_people_who_must_act_next_are_mailed(database_url, tmp_path, smtp_server):
    import time

    port, received = smtp_server
    catalogued_central(database_url, ["site-a"], patients=100)
    settings = Settings(data_dir=tmp_path, database_url=database_url,
                        oidc_issuer="http://central.test", smtp_host="127.0.0.1",
                        smtp_port=port, smtp_from="spe@hdab.invalid")
    issuer = demo_issuer(settings)

    def as_(user, role, inst=None):
        return {"Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}

    with TestClient(create_central_app(settings), base_url="http://central.test") as client:
        # Users are known (with their address) once they have signed in.
        client.get("/api/v1/notifications", headers=as_("bob", "approver", "site-a"))
        client.get("/api/v1/notifications", headers=as_("zoe", "approver", "site-c"))
        pid = client.post("/api/v1/permits", json=application(datasets=[DATASET_A]),
                          headers=as_("alice", "researcher")).json()["id"]
        client.post(f"/api/v1/permits/{pid}/submit", headers=as_("alice", "researcher"))
        for _ in range(50):
            if received:
                break
            time.sleep(0.05)
        client.post(f"/api/v1/permits/{pid}/reviews", headers=as_("bob", "approver", "site-a"),
                    json={"decision": "changes", "reason": "add the protocol"})
        for _ in range(50):
            if len(received) >= 2:
                break
            time.sleep(0.05)
    assert [m["To"] for m in received] == ["bob@demo.invalid", "alice@demo.invalid"]
    assert pid in received[0]["Subject"]
    assert "add the protocol" in received[1].get_payload(decode=True).decode()
    assert received[0]["From"] == "spe@hdab.invalid"


def test_an_amendment_goes_back_to_the_institutions_it_concerns(central):
    pid = apply_and_submit(central)
    review(central, pid, "bob", "site-a")
    review(central, pid, "bea", "site-b")
    hdab(central, pid, "issue")
    ask = {"members": [uid("dave")], "datasets": ["site-c/imaging-and-clinical-records"],
           "reason": "a statistician joins; the third site's cohort"}
    assert central.post(f"/api/v1/permits/{pid}/amendments", json=ask,
                        headers=central.as_("carol", "researcher")).status_code == 403
    resp = central.post(f"/api/v1/permits/{pid}/amendments", json=ask,
                        headers=central.as_("alice", "researcher"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "active"  # in force as it was meanwhile
    assert body["amendment"]["institutions"] == ["site-a", "site-b", "site-c"]
    assert uid("dave") not in body["members"]
    again = central.post(f"/api/v1/permits/{pid}/amendments", json=ask,
                         headers=central.as_("alice", "researcher"))
    assert again.status_code == 409
    review(central, pid, "cem", "site-c")
    review(central, pid, "bob", "site-a")
    early = hdab(central, pid, "issue")
    assert early.status_code == 409
    assert "amendment concerns" in early.json()["detail"]
    review(central, pid, "bea", "site-b")
    done = hdab(central, pid, "issue", reason="amendment fine").json()
    assert done["amendment"] is None
    assert uid("dave") in done["members"]
    assert done["institutions"] == ["site-a", "site-b", "site-c"]
    assert done["status"] == "active"


def test_a_draft_changes_its_members_and_datasets(central):
    alice = central.as_("alice", "researcher")
    pid = central.post("/api/v1/permits", json=application(), headers=alice).json()["id"]
    resp = central.patch(f"/api/v1/permits/{pid}", headers=alice, json={
        "members": [uid("carol"), uid("dave")], "datasets": [DATASET_B,
                                                             "site-c/imaging-and-clinical-records"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["members"] == [uid("alice"), uid("carol"), uid("dave")]
    assert [d["dataset"] for d in body["datasets"]] == [
        DATASET_B, "site-c/imaging-and-clinical-records"]
    assert body["institutions"] == ["site-b", "site-c"]
    again = central.patch(f"/api/v1/permits/{pid}", headers=alice, json={"members": []})
    assert again.json()["members"] == [uid("alice")]


def test_notifications_name_their_permit_and_lists_hide_drafts(central):
    draft = central.post("/api/v1/permits", json=application(),
                         headers=central.as_("alice", "researcher")).json()["id"]
    pid = apply_and_submit(central)
    bob = central.as_("bob", "approver", "site-a")
    notes = central.get("/api/v1/notifications", headers=bob).json()
    assert pid in [n["permit"] for n in notes]
    queue = [p["id"] for p in central.get("/api/v1/permits", headers=bob).json()]
    assert pid in queue
    assert draft not in queue
    assert denied(central, "permit.view", draft) == []  # not even asked about
