"""The permit tier end to end: a permit issued at the centre reaches the nodes holding its
datasets; its members then get exact counts there, and nowhere else; a revocation reaches
the nodes at once, and their own copy refuses from then on."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient

from spe.app import create_central_app
from spe.identity import DemoIssuer
from spe.pki import private_key_of
from spe.wire.context import ContextSigner
from spe.wire.permit import PermitDocument, document_hash, sign_document
from spe.wire.query import Query
from tests.central import catalogued_central
from tests.gateway.conftest import ISSUER, RARE

RARE_CODE = {"type": "condition", "system": "icd-10", "code": RARE}


@pytest.fixture
def hub(node_servers, tmp_path):
    central_db = f"sqlite:///{tmp_path / 'central.db'}"
    catalogued_central(central_db, ("site-a", "site-b", "site-c"), patients=40)
    app = create_central_app(node_servers.settings.model_copy(update={
        "database_url": central_db, "federation_nodes": node_servers.urls}))
    issuer = DemoIssuer(node_servers.settings.issuer_key_path, ISSUER, "spe")
    with TestClient(app) as client:
        client.as_ = lambda user, role, inst=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}
        yield client


def issue_permit(hub, members=("carol",)) -> str:
    alice = hub.as_("alice", "researcher")
    body = {"organisation": "Uni", "title": "Rare disease counts", "summary": "s",
            "purpose": "scientific_research", "declaration": True,
            "start_date": str(date.today()),
            "end_date": str(date.today() + timedelta(days=90)),
            "members": [f"{m}@{ISSUER}" for m in members],
            "datasets": ["site-a/imaging-and-clinical-records",
                         "site-b/imaging-and-clinical-records"]}
    pid = hub.post("/api/v1/permits", json=body, headers=alice).json()["id"]
    hub.post(f"/api/v1/permits/{pid}/submit", headers=alice)
    for site, user in (("site-a", "bob"), ("site-b", "bea")):
        hub.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                 headers=hub.as_(user, "approver", site))
    issued = hub.post(f"/api/v1/permits/{pid}/issue", json={"reason": "ok"},
                      headers=hub.as_("hilde", "hdab"))
    assert issued.status_code == 200, issued.text
    assert issued.json()["pushed"] == {"site-a": "delivered", "site-b": "delivered"}
    return pid


def node(body: dict, site: str) -> dict:
    return next(n for n in body["nodes"] if n["node_id"] == site)


def test_members_get_exact_counts_only_where_the_permit_covers(hub):
    pid = issue_permit(hub)
    resp = hub.post(f"/api/v1/query?permit={pid}", json={"where": RARE_CODE},
                    headers=hub.as_("alice", "researcher"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["tier"] == "permit"
    a = node(body, "site-a")
    assert a["answer"]["total"] == {"key": {}, "value": 3, "suppressed": False,  # exact
                                    "perturbed": False, "reason": None, "max_noise": None,
                                    "sd": None}
    assert node(body, "site-b")["answer"]["total"]["value"] == 0
    c = node(body, "site-c")  # holds none of the permit's datasets
    assert c["status"] == "refused"
    assert "unknown to this node" in c["reason"]
    assert body["total"]["value"] == 3
    statistics = hub.post("/api/v1/query", json={"where": RARE_CODE},
                          headers=hub.as_("alice", "researcher")).json()
    assert node(statistics, "site-a")["answer"]["total"]["suppressed"] is True


def test_a_revocation_reaches_the_nodes_at_once(hub, node_servers):
    import httpx

    from spe.pki import client_ssl_context

    pid = issue_permit(hub)
    carol = hub.as_("carol", "researcher")
    assert hub.post(f"/api/v1/query?permit={pid}", json={"where": RARE_CODE},
                    headers=carol).status_code == 200
    revoked = hub.post(f"/api/v1/permits/{pid}/revoke", json={"reason": "breach"},
                       headers=hub.as_("hilde", "hdab"))
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["pushed"] == {"site-a": "delivered", "site-b": "delivered"}
    refused = hub.post(f"/api/v1/query?permit={pid}", json={"where": RARE_CODE},
                       headers=carol)
    assert refused.status_code == 403
    assert "revoked" in refused.json()["detail"]

    # A hub that had not heard yet (or a forged shortcut past it) meets the node's copy.
    query = Query.model_validate({"where": RARE_CODE})
    context = ContextSigner(private_key_of(node_servers.pki / "hub.key")).sign(
        user=f"carol@{ISSUER}", roles=["researcher"], tier="permit",
        query_hash=query.digest(), node_id="site-a", permit=pid)
    with httpx.Client(base_url=node_servers.urls["site-a"], timeout=5,
                      verify=client_ssl_context(node_servers.pki, "hub")) as client:
        resp = client.post("/api/v1/query", json={"query": query.model_dump(mode="json")},
                           headers={"X-SPE-Hub-Context": context})
        assert resp.status_code == 403
        assert "not active" in resp.json()["detail"]
        # Replaying the issuing document cannot undo the revocation.
        old = sign_document(PermitDocument(
            pid=pid, seq=1, status="issued", members=[f"carol@{ISSUER}"],
            datasets={"site-a": ["site-a/imaging-and-clinical-records"]},
            form="anonymised", purpose="scientific_research", start=date.today(),
            end=date.today() + timedelta(days=9), iat=0), private_key_of(
            node_servers.pki / "hub.key"))
        def pushed(document: str) -> dict:  # the hub's context for a push (gateway/node/trust)
            return {"X-SPE-Hub-Context": ContextSigner(private_key_of(
                node_servers.pki / "hub.key")).sign(
                user="hub", roles=["hub"], tier="permit", query_hash=document_hash(document),
                node_id="site-a", permit=pid)}

        replay = client.put(f"/api/v1/permits/{pid}", json={"document": old},
                            headers=pushed(old))
        assert replay.status_code == 409
        # And a document signed by anyone but the hub is refused outright.
        from cryptography.hazmat.primitives.asymmetric import ec

        forged = sign_document(PermitDocument(
            pid=pid, seq=99, status="issued", members=["eve"], datasets={"site-a": ["x"]},
            form="anonymised", purpose="x", start=date.today(), end=date.today(), iat=0),
            ec.generate_private_key(ec.SECP256R1()))
        assert client.put(f"/api/v1/permits/{pid}", json={"document": forged},
                          headers=pushed(forged)).status_code == 401
