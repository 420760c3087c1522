"""The federation from the outside: a hub and three nodes over real mutual TLS, queried
the way a researcher (and an attacker) would."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from spe.app import create_central_app
from spe.db.migrate import upgrade
from spe.identity import DemoIssuer
from spe.pki import client_ssl_context, init_pki, server_ssl_options
from spe.wire.context import ContextSigner
from spe.wire.query import Query
from tests.gateway.conftest import ISSUER, RARE, SITES, NodeServers
from tests.servers import Running, bind, serve


@dataclass
class Federation:
    hub: TestClient
    issuer: DemoIssuer
    pki: Path
    urls: dict[str, str]
    running: dict[str, Running]
    dbs: dict[str, Path]
    central_db: str
    users: list[str] = field(default_factory=list)

    def token(self, user: str, roles: tuple[str, ...] = ("researcher",), **kw) -> dict:
        return {"Authorization": f"Bearer {self.issuer.mint(user, list(roles), **kw)}"}

    def ask(self, user: str, where: dict, kind: str = "count", by: list | None = None):
        answer = {"kind": kind, **({"by": by} if by else {})}
        return self.hub.post("/api/v1/query", json={"where": where, "answer": answer},
                             headers=self.token(user))


@pytest.fixture
def federation(node_servers: NodeServers, tmp_path) -> Iterator[Federation]:
    """The central app (in-process) whose hub asks the three real nodes over mTLS."""
    settings = node_servers.settings
    central_db = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(central_db, "central")
    central = create_central_app(settings.model_copy(update={
        "database_url": central_db, "federation_nodes": node_servers.urls,
        "query_timeout_seconds": 3.0}))
    with TestClient(central) as hub:
        yield Federation(hub, DemoIssuer(settings.issuer_key_path, ISSUER, "spe"),
                         node_servers.pki, node_servers.urls, node_servers.running,
                         node_servers.dbs, central_db)


def node(answer: dict, site: str) -> dict:
    return next(n for n in answer["nodes"] if n["node_id"] == site)


FEMALE = {"type": "patient", "sex": "female"}
RARE_CODE = {"type": "condition", "system": "icd-10", "code": RARE}
# Each site's 40 synthetic patients: a count of 20 or more is always shown (the noise is at
# most 5 and counts are shown from 15), so these answers do not depend on the node's secret.
BROAD = {"type": "not", "of": RARE_CODE}
EVERYONE = {"type": "or", "of": [BROAD, RARE_CODE]}


def test_every_node_answers_with_status_and_time(federation):
    resp = federation.ask("alice", BROAD)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [n["node_id"] for n in body["nodes"]] == list(SITES)
    for n in body["nodes"]:
        assert n["status"] == "answered"
        assert n["ms"] > 0
        total = n["answer"]["total"]
        assert abs(total["value"] - 40) <= 5
        # Perturbed by the cell-key method, saying by how much and that it is stable.
        assert total["perturbed"] is True
        assert (total["max_noise"], total["sd"]) == (5, 2.0)
        assert "at most ±5" in total["reason"]
        assert "always gives this value" in total["reason"]
    assert body["total"]["value"] == sum(n["answer"]["total"]["value"] for n in body["nodes"])
    assert body["total"]["perturbed"] is True
    assert body["total"]["max_noise"] == 15
    assert body["total"]["sd"] == pytest.approx(12 ** 0.5)
    assert body["sites_answering"] == 3


def test_a_count_of_three_comes_back_suppressed_never_as_a_number(federation):
    body = federation.ask("bob", RARE_CODE).json()
    a = node(body, "site-a")
    assert a["status"] == "suppressed"
    total = a["answer"]["total"]
    assert (total["value"], total["suppressed"], total["perturbed"]) == (None, True, False)
    assert total["reason"] == ("fewer than 10 patients, or too near 10 to show with its "
                               "noise (shown counts start at 15): not shown; widen the "
                               "question (fewer criteria or coarser strata)")
    assert any("fewer than 10 patients" in note for note in a["answer"]["notes"])
    # The other sites hold none: also suppressed, never a 0.
    for site in ("site-b", "site-c"):
        assert node(body, site)["answer"]["total"]["value"] is None
    assert body["total"]["suppressed"] is True


def test_a_tracker_pair_is_answered_consistently_without_a_refusal(federation):
    """A broad question, then the same without a group of three: both are answered (no
    refusal to read anything from), each perturbed on its own set of patients."""
    broad = federation.ask("mallory", EVERYONE).json()
    assert node(broad, "site-a")["status"] == "answered"
    narrowed = federation.ask("mallory", BROAD).json()
    a = node(narrowed, "site-a")
    assert a["status"] == "answered"
    assert a["answer"]["total"]["perturbed"] is True
    assert not any("differencing" in note for note in a["answer"]["notes"])
    # Sites without those patients have the same set for both: the two values differ by
    # the question's part of the noise only (so equal values are no sign of equal sets).
    for site in ("site-b", "site-c"):
        gap = (node(narrowed, site)["answer"]["total"]["value"]
               - node(broad, site)["answer"]["total"]["value"])
        assert abs(gap) <= 6
    # Asked again, or by another user, a question gets the value it got.
    again = federation.ask("trent", BROAD).json()
    assert node(again, "site-a")["answer"]["total"] == a["answer"]["total"]


def test_a_stratified_answer_has_its_total_beside_suppressed_cells(federation):
    """The total is perturbed in its own right, never withheld: with every cell perturbed
    independently, total minus the shown cells is no suppressed cell's count."""
    body = federation.ask("carol", EVERYONE, kind="stratified", by=["age_band"]).json()
    for n in body["nodes"]:
        ans = n["answer"]
        assert ans["total"]["suppressed"] is False
        assert ans["total"]["perturbed"] is True
        for c in ans["cells"]:
            assert c["perturbed"] is not c["suppressed"]
            assert c["reason"]
    # The case this is about: some site has a band of fewer than 10 of its 40.
    assert any(c["suppressed"] for n in body["nodes"] for c in n["answer"]["cells"]), body
    assert body["total"]["suppressed"] is False
    shown = [c for c in body["cells"] if not c["suppressed"]]
    assert shown, body


def _node_client(federation, site: str, name: str = "hub", pki: Path | None = None):
    return httpx.Client(base_url=federation.urls[site], timeout=5,
                        verify=client_ssl_context(pki or federation.pki, name))


def test_a_node_refuses_a_query_without_the_hubs_signature(federation, tmp_path):
    query = {"query": {"where": FEMALE}}
    with _node_client(federation, "site-a") as client:  # a member's certificate: TLS passes
        assert client.post("/api/v1/query", json=query).status_code == 401
        from cryptography.hazmat.primitives.asymmetric import ec

        forged = ContextSigner(ec.generate_private_key(ec.SECP256R1())).sign(
            user="eve", roles=["researcher"], tier="statistics",
            query_hash=Query.model_validate(query["query"]).digest(), node_id="site-a")
        resp = client.post("/api/v1/query", json=query,
                           headers={"X-SPE-Hub-Context": forged})
        assert resp.status_code == 401
        assert "not signed by this node's hub" in resp.json()["detail"]
    with sqlite3.connect(federation.dbs["site-a"]) as conn:
        # Refused at the node's hub door, before any query is looked at.
        denied = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'door' "
                              "AND object = 'POST /api/v1/query' "
                              "AND decision = 'deny'").fetchone()[0]
    assert denied >= 2


def test_a_node_refuses_a_certificate_from_another_ca(federation, tmp_path):
    other = tmp_path / "other-pki"
    init_pki(other, nodes=["site-a"])
    # Trusting our CA for the server, but presenting a hub certificate of another CA.
    import ssl

    ctx = client_ssl_context(federation.pki, "hub")
    ctx.load_cert_chain(other / "hub.crt", other / "hub.key")
    with httpx.Client(base_url=federation.urls["site-a"], verify=ctx, timeout=5) as client:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError,
                            ssl.SSLError)):
            client.post("/api/v1/query", json={"query": {"where": FEMALE}})


def test_a_stopped_node_shows_as_unreachable_while_the_others_answer(federation):
    federation.running["site-b"].stop()
    body = federation.ask("dave", BROAD).json()
    assert node(body, "site-b")["status"] == "unreachable"
    assert node(body, "site-b")["answer"] is None
    assert {node(body, s)["status"] for s in ("site-a", "site-c")} == {"answered"}
    assert body["sites_answering"] == 2
    assert body["total"]["value"] == sum(node(body, s)["answer"]["total"]["value"]
                                         for s in ("site-a", "site-c"))


def test_with_too_few_sites_answering_no_total_is_given(federation):
    federation.running["site-b"].stop()
    federation.running["site-c"].stop()
    body = federation.ask("erin", BROAD).json()
    assert body["sites_answering"] == 1
    assert body["total"] is None
    assert any("at least 2" in note for note in body["notes"])
    assert node(body, "site-a")["status"] == "answered"  # its own answer is still shown


def test_only_researchers_ask_and_bad_queries_get_a_422(federation):
    resp = federation.hub.post("/api/v1/query", json={"where": FEMALE},
                               headers=federation.token("h", ("hdab",)))
    assert resp.status_code == 403
    deep = FEMALE
    for _ in range(7):
        deep = {"type": "not", "of": deep}
    for bad, says in (({"where": deep}, "nested"),
                      ({"where": {"type": "patient"}}, "sex or age"),
                      ({"where": FEMALE, "answer": {"kind": "stratified"}}, "needs `by`"),
                      ({"where": {**FEMALE, "colour": "blue"}}, "colour")):
        resp = federation.hub.post("/api/v1/query", json=bad,
                                   headers=federation.token("frank"))
        assert resp.status_code == 422, resp.text
        assert says in resp.text


def test_queries_are_audited_at_the_hub_and_at_each_node(federation):
    from sqlalchemy import select

    from spe.audit import CentralAuditEntry
    from spe.db import make_engine, make_sessionmaker

    body = federation.ask("grace", FEMALE).json()
    engine = make_engine(federation.central_db)
    try:
        with make_sessionmaker(engine)() as session:
            entry = session.execute(select(CentralAuditEntry).where(
                CentralAuditEntry.action == "query",
                CentralAuditEntry.object == body["query_hash"])).scalar_one()
        assert "statistics" in entry.details
        assert "answered" in entry.details
    finally:
        engine.dispose()
    for site in SITES:
        with sqlite3.connect(federation.dbs[site]) as conn:
            rows = conn.execute("SELECT actor, decision, details FROM audit_log WHERE "
                                "action = 'query' AND object = ? AND actor LIKE 'grace@%'",
                                (body["query_hash"],)).fetchall()
        assert len(rows) == 1
        assert rows[0][1] == "allow"
        assert '"tier": "statistics"' in rows[0][2]
        details = json.loads(rows[0][2])
        assert details["perturbed"] is True
        shown = node(body, site)["answer"]["total"]
        # What was answered, as it was shown.
        assert details["answered"] == ({"total": shown["value"]} if not shown["suppressed"]
                                       else {})


def beacon(federation, user: str, filters: list[dict], granularity: str):
    return federation.hub.post("/api/v1/beacon/individuals", headers=federation.token(user),
                               json={"meta": {"apiVersion": "v2.0"}, "query": {
                                   "filters": filters, "requestedGranularity": granularity}})


def test_beacon_counts_follow_the_same_tier_rules(federation):
    resp = beacon(federation, "heidi", [{"id": "NCIT:C16576"}], "count")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["meta"]["returnedGranularity"] == "count"
    native = federation.ask("ivan", FEMALE).json()
    assert body["responseSummary"]["numTotalResults"] == native["total"]["value"]
    assert body["responseSummary"]["exists"] is True
    counts = {s["id"]: s["resultsCount"] for s in body["response"]["resultSets"]}
    shown = {n["node_id"]: (n["answer"] or {}).get("total", {}).get("value")
             for n in native["nodes"]}
    # A site whose count the tier suppresses (its noise is drawn anew each run) is no
    # result set; it is listed, with its status, in info.sites.
    assert counts == {site: v for site, v in shown.items() if v is not None}
    assert {s["id"] for s in body["info"]["sites"]} == set(shown)
    assert all(s["results"] == [] for s in body["response"]["resultSets"])  # no records
    # The same question as a GET is the same answer.
    get = federation.hub.get("/api/v1/beacon/individuals", headers=federation.token("heidi"),
                             params={"filters": "NCIT:C16576", "requestedGranularity": "count"})
    assert get.status_code == 200, get.text
    assert get.json()["responseSummary"] == body["responseSummary"]


def test_beacon_never_returns_records_or_small_counts(federation):
    body = beacon(federation, "judy", [{"id": f"ICD10:{RARE}"}], "record").json()
    # Records are not a tier here, and a suppressed total has no count to give: boolean.
    assert body["meta"]["receivedRequestSummary"]["requestedGranularity"] == "record"
    assert body["meta"]["returnedGranularity"] == "boolean"
    assert "response" not in body  # no result sets, so no resultsCount anywhere
    assert "numTotalResults" not in body["responseSummary"]
    # Suppressed is not "no": Beacon's false would claim that nobody has the code.
    assert body["responseSummary"] == {"exists": True}
    assert "possibly none" in body["info"]["suppressed"]
    site_a = next(s for s in body["info"]["sites"] if s["id"] == "site-a")
    assert site_a["status"] == "suppressed"
    assert "count" not in site_a
    assert "fewer than 10 patients" in site_a["suppressed"]
    # 22 to 24 adults with a study at each site: always shown, so "yes", at boolean.
    boolean = beacon(federation, "judy2", [{"id": "age", "operator": ">=", "value": "18"}],
                     "boolean").json()
    assert boolean["meta"]["returnedGranularity"] == "boolean"
    assert boolean["responseSummary"] == {"exists": True}
    assert "suppressed" not in boolean["info"]


def test_beacon_says_the_same_for_a_suppressed_count_and_for_none(federation):
    """Three patients at one site and a code nobody has read alike: whether a small
    group exists is not told, by the answer nor by a refusal."""
    def shape(code: str) -> tuple:
        body = beacon(federation, "olga", [{"id": f"ICD10:{code}"}], "count").json()
        return (body["meta"]["returnedGranularity"], body["responseSummary"],
                body["info"]["suppressed"], [s["status"] for s in body["info"]["sites"]])

    assert shape(RARE) == shape("Z99.9")


def test_beacon_refuses_unknown_filters_with_the_reason(federation):
    for filters, says in (([{"id": "HP:0001250"}], "HP:0001250"),
                          ([{"id": "age", "operator": "~", "value": "4"}], "operator"),
                          ([], "at least one filter")):
        resp = beacon(federation, "ken", filters, "count")
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["errorCode"] == 422
        assert says in resp.json()["error"]["errorMessage"]
    assert federation.hub.get("/api/v1/beacon/filtering_terms").status_code == 200
    resp = federation.hub.post("/api/v1/beacon/individuals",
                               json={"query": {"filters": [{"id": "NCIT:C16576"}]}})
    assert resp.status_code == 401
    assert resp.json()["error"]["errorCode"] == 401
    resp = federation.hub.get("/api/v1/beacon/individuals",
                              params={"filters": "NCIT:C16576"})
    assert resp.status_code == 401


def test_a_node_that_does_not_answer_in_time_is_reported_timed_out(node_servers, tmp_path):
    """site-c is replaced by a server that accepts the query (mutual TLS and all) and
    never answers: the others are still answered and combined."""
    import asyncio

    from fastapi import FastAPI


    hang = FastAPI()

    @hang.post("/api/v1/query")
    async def never() -> dict:
        await asyncio.sleep(60)
        return {}

    sock = bind()
    urls = {**node_servers.urls, "site-c": f"https://127.0.0.1:{sock.getsockname()[1]}"}
    central_db = f"sqlite:///{tmp_path / 'central.db'}"
    upgrade(central_db, "central")
    central = create_central_app(node_servers.settings.model_copy(update={
        "database_url": central_db, "federation_nodes": urls, "query_timeout_seconds": 1.0}))
    issuer = DemoIssuer(node_servers.settings.issuer_key_path, ISSUER, "spe")
    with serve(hang, sock, lifespan="off", timeout_graceful_shutdown=1,
               **server_ssl_options(node_servers.pki, "site-c")), TestClient(central) as hub:
        resp = hub.post("/api/v1/query", json={"where": BROAD},
                        headers={"Authorization": f"Bearer {issuer.mint('liz', ['researcher'])}"})
    body = resp.json()
    c = node(body, "site-c")
    assert c["status"] == "timed_out"
    assert "within 1 s" in c["reason"]
    assert c["ms"] >= 900
    assert {node(body, s)["status"] for s in ("site-a", "site-b")} == {"answered"}
    assert body["total"]["value"] == sum(node(body, s)["answer"]["total"]["value"]
                                         for s in ("site-a", "site-b"))


def test_a_node_refuses_once_the_users_daily_budget_is_spent(node_dbs, pki, tmp_path):
    """The node's own policy (here a budget of 2) decides, whatever the hub says."""
    import shutil

    from gateway.node.app import create_node_app
    from gateway.node.config import NodeConfig
    from spe.pki import private_key_of
    from spe.settings import REPO_ROOT, Settings

    policies = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policies)
    rules = policies / "query" / "query.rego"
    rules.write_text(rules.read_text().replace('"statistics": 200,',
                                               '"statistics": 2,'))
    settings = Settings(data_dir=tmp_path, oidc_issuer=ISSUER, pki_dir=pki,
                        policy_dir=policies)
    app = create_node_app(NodeConfig("site-b", "site-b", f"sqlite:///{node_dbs['site-b']}"),
                          settings)
    signer = ContextSigner(private_key_of(pki / "hub.key"))
    query = Query.model_validate({"where": FEMALE})
    statuses = []
    sock = bind()
    with serve(app, sock, lifespan="off", **server_ssl_options(pki, "site-b")), \
            httpx.Client(base_url=f"https://127.0.0.1:{sock.getsockname()[1]}", timeout=10,
                         verify=client_ssl_context(pki, "hub")) as client:
        for _ in range(3):
            context = signer.sign(user="budget-user", roles=["researcher"], tier="statistics",
                                  query_hash=query.digest(), node_id="site-b")
            resp = client.post("/api/v1/query", json={"query": query.model_dump(mode="json")},
                               headers={"X-SPE-Hub-Context": context})
            statuses.append(resp.status_code)
    assert statuses == [200, 200, 403]
    assert "budget of 2" in resp.json()["detail"]
    assert "resets at midnight UTC" in resp.json()["detail"]


def shown_or_suppressed(cell: dict) -> bool:
    """A cell as the statistics tier gives it: a perturbed value of at least 15, or
    suppressed with its reason (never a 0, never a bare None)."""
    if cell["suppressed"]:
        return cell["value"] is None and "fewer than 10 patients" in cell["reason"]
    return cell["perturbed"] and cell["value"] >= 15 and "±5" in cell["reason"]


def test_every_cell_of_a_stratum_is_shown_so_an_empty_one_is_not_a_zero(federation):
    """The strata are the values the node's population has (query-independent): an empty
    cell among them is suppressed, never absent nor 0; values nobody (or hardly anybody)
    has at the node are structural, said once in the notes, not suppressed cells."""
    body = federation.ask("nina", FEMALE, kind="stratified", by=["sex"]).json()
    for n in body["nodes"]:
        cells = {c["key"]["sex"]: c for c in n["answer"]["cells"]}
        assert set(cells) == {"female", "male"}
        male = cells["male"]  # none of them are men
        assert (male["value"], male["suppressed"]) == (None, True)
        assert "fewer than 10 patients" in male["reason"]
        assert shown_or_suppressed(cells["female"])
        assert any(note.startswith("sex: other, unknown: fewer than 10 patients in the whole")
                   for note in n["answer"]["notes"])


def test_a_count_by_sex_gives_a_total_and_the_two_real_sexes(federation):
    body = federation.ask("olga", EVERYONE, kind="stratified", by=["sex"]).json()
    assert body["total"]["suppressed"] is False
    assert abs(body["total"]["value"] - 123) <= 15
    for n in body["nodes"]:
        assert n["answer"]["total"]["suppressed"] is False  # beside suppressed cells too
        cells = {c["key"]["sex"]: c for c in n["answer"]["cells"]}
        assert set(cells) == {"female", "male"}
        assert all(shown_or_suppressed(c) for c in cells.values())
    cells = {c["key"]["sex"]: c for c in body["cells"]}
    assert set(cells) == {"female", "male"}
    # site-a's 24 women and site-b's 24 men are always shown.
    assert all(not c["suppressed"] and c["perturbed"] for c in cells.values())


def test_the_same_question_asked_many_times_gets_one_value(federation):
    where = BROAD
    values = {federation.ask("pat", where).json()["total"]["value"] for _ in range(20)}
    assert len(values) == 1
