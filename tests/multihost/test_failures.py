"""The failures a network has, across hosts: a node's link cut, a worker host lost mid-job,
the hub restarted mid-federation, a partition healed. Nothing is lost and every state is
visible to whoever follows it, through the API (or the operator's own commands)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.multihost.conftest import issue_permit
from tests.multihost.federation import APPROVERS, SITES, Federation, spe_command, wait_for
from tests.multihost.jobs import (
    FINAL,
    finished_with_outputs,
    node_job_row,
    status,
    submit,
    wait_job,
)

IMAGING = {"where": {"type": "imaging", "modality": ["CT", "MR"]}}
ANSWERED = {"answered", "suppressed"}


def query(fed: Federation, user: str = "alice") -> dict:
    with fed.hub() as hub:
        resp = hub.post("/api/v1/query", json=IMAGING, headers=fed.headers(user, "researcher"))
    assert resp.status_code == 200, resp.text
    return {n["node_id"]: n for n in resp.json()["nodes"]}


def all_answer(fed: Federation) -> bool:
    return all(n["status"] in ANSWERED for n in query(fed).values())


def airlock_request(fed: Federation, job_id: str) -> dict | None:
    """The job's request in the output checkers' queue (reading it collects nothing)."""
    with fed.hub() as hub:
        queue = hub.get("/api/v1/airlock/requests", headers=fed.headers("olga",
                                                                          "output_checker"))
    assert queue.status_code == 200, queue.text
    return next((r for r in queue.json() if r["job_id"] == job_id), None)


def witnessed(fed: Federation, site: str) -> int:
    """How many of the node's signed audit heads the hub holds (`spe audit witness`)."""
    done = subprocess.run([*spe_command(), "audit", "witness", "--node", site,
                           "--database-url", fed.admin_urls["central"]],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return len(json.loads(done.stdout))


@pytest.fixture
def healed(federation: Federation):
    """Whatever a test cuts is restored after it, so the next starts from a whole network."""
    yield federation
    for host in federation.net.hosts:
        federation.net.heal(host)
        federation.net.link(host, True)
    for worker in federation.workers.values():
        if not worker.running():
            worker.start(federation.net)
    if not federation.central.running():
        federation.start_central()


def test_a_node_cut_off_mid_query_is_reported_and_the_others_answer(healed: Federation):
    fed = healed
    assert all_answer(fed)  # the hub's connections to the nodes are open (kept alive)
    # Mid-query: the request reaches site-b over the open connection, its answer is lost.
    fed.net.partition("site-b", "central", replies_only=True)
    mr = {"where": {"type": "imaging", "modality": ["MR"]}}
    with fed.hub() as hub:  # comes back: the hub waits SPE_QUERY_TIMEOUT_SECONDS at most
        resp = hub.post("/api/v1/query", json=mr, headers=fed.headers("alice", "researcher"))
    assert resp.status_code == 200, resp.text
    nodes = {n["node_id"]: n for n in resp.json()["nodes"]}
    assert nodes["site-b"]["status"] == "timed_out", nodes["site-b"]
    assert nodes["site-b"]["reason"], nodes["site-b"]
    assert {s: nodes[s]["status"] in ANSWERED for s in ("site-a", "site-c")} == {
        "site-a": True, "site-c": True}, nodes
    assert _node_audited(fed, "site-b", "query", resp.json()["query_hash"])  # it did answer
    fed.net.heal("site-b")
    wait_for(lambda: all_answer(fed), 60, "site-b answering again", fed)

    fed.net.link("site-b", False)  # and the cable pulled
    nodes = query(fed)
    assert nodes["site-b"]["status"] in {"timed_out", "unreachable"}, nodes["site-b"]
    assert {s: nodes[s]["status"] in ANSWERED for s in ("site-a", "site-c")} == {
        "site-a": True, "site-c": True}, nodes
    fed.net.link("site-b", True)
    wait_for(lambda: all_answer(fed), 60, "site-b answering again", fed)


def test_a_worker_host_lost_mid_job_is_requeued_and_finished(healed: Federation, permit):
    fed = healed
    job_id = submit(fed, permit["id"], "site-a", pause=8)
    running = wait_job(fed, job_id, lambda n: n["state"] == "running", seconds=120)
    assert running["attempts"] == 1
    for worker in fed.workers.values():  # the host dies: its processes and its link
        worker.kill()
    fed.net.link("worker", False)
    # The node still tells the hub what it knows: the job was running, nobody finished it.
    assert status(fed, job_id)["state"] not in FINAL
    time.sleep(3)
    fed.net.link("worker", True)
    for worker in fed.workers.values():  # the host is back; its workers start again
        worker.start(fed.net)
    node = wait_job(fed, job_id, finished_with_outputs)
    assert node["state"] == "succeeded", node
    assert node["attempts"] == 2  # queued again once the lost worker's heartbeat was stale
    worker, attempts = node_job_row(fed, "site-a", node["job_id"])
    assert (worker.endswith("/worker-host-site-a"), attempts) == (True, 2)
    assert airlock_request(fed, job_id) is not None


def test_the_hub_restarted_mid_federation_loses_nothing(healed: Federation, datasets):
    fed = healed
    # Under way: a permit approved at one institution of three, a job running.
    issuer = fed.central_url
    with fed.hub() as hub:
        alice = fed.headers("alice", "researcher")
        applied = hub.post("/api/v1/permits", headers=alice, json={
            "organisation": "Uni", "title": "Across a restart", "summary": "s",
            "purpose": "scientific_research", "declaration": True,
            "start_date": time.strftime("%Y-%m-%d"),
            "end_date": time.strftime("%Y-%m-%d", time.gmtime(time.time() + 30 * 86400)),
            "members": [f"carol@{issuer}"], "datasets": [datasets[s] for s in SITES]})
        assert applied.status_code in (200, 201), applied.text
        pid = applied.json()["id"]
        assert hub.post(f"/api/v1/permits/{pid}/submit", headers=alice).status_code == 200
        first = hub.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                         headers=fed.headers("bob", "approver", "site-a"))
        assert first.status_code == 200, first.text
    running_permit = issue_permit(fed, datasets)
    job_id = submit(fed, running_permit["id"], "site-a", pause=6)
    wait_job(fed, job_id, lambda n: n["state"] == "running", seconds=120)

    fed.central.kill()  # SIGKILL: no clean shutdown
    fed.start_central()

    # The job went on at the node while the hub was down; its outputs are collected now.
    node = wait_job(fed, job_id, finished_with_outputs)
    assert node["state"] == "succeeded", node
    assert airlock_request(fed, job_id) is not None
    # The permit goes on from where it was.
    with fed.hub() as hub:
        seen = hub.get(f"/api/v1/permits/{pid}", headers=fed.headers("alice", "researcher"))
        assert seen.status_code == 200, seen.text
        for site, user in APPROVERS.items():
            if site == "site-a":
                continue
            review = hub.post(f"/api/v1/permits/{pid}/reviews", json={"decision": "approve"},
                              headers=fed.headers(user, "approver", site))
            assert review.status_code == 200, review.text
        issued = hub.post(f"/api/v1/permits/{pid}/issue", json={"reason": "ok"},
                          headers=fed.headers("hilde", "hdab"))
        assert issued.status_code == 200, issued.text
        assert issued.json()["pushed"] == dict.fromkeys(SITES, "delivered")
        verified = hub.get("/api/v1/audit/verify", headers=fed.headers("root", "admin"))
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"], verified.json()
    assert all_answer(fed)


def test_a_partition_healed_lets_the_hub_catch_up(healed: Federation, permit):
    fed = healed
    with fed.hub() as hub:  # mallory is known to the centre (a user row to suspend)
        hub.get("/api/v1/me", headers=fed.headers("mallory", "researcher"))
        users = hub.get("/api/v1/users", headers=fed.headers("root", "admin")).json()
    mallory = next(u["id"] for u in users if u["subject"] == "mallory")
    job_id = submit(fed, permit["id"], "site-a", pause=3)
    node_job = status(fed, job_id)["job_id"]
    before = witnessed(fed, "site-a")

    fed.net.partition("site-a", "central")
    # While cut off: the node is reported, not waited for; a suspension cannot reach it.
    assert query(fed)["site-a"]["status"] in {"timed_out", "unreachable"}
    with fed.hub() as hub:
        suspended = hub.put(f"/api/v1/users/{mallory}/suspension",
                            json={"suspended": True, "reason": "test"},
                            headers=fed.headers("root", "admin"))
    assert suspended.status_code == 200, suspended.text
    told = suspended.json()["nodes"]
    assert told["site-a"] != "delivered"
    assert {s: told[s] for s in ("site-b", "site-c")} == dict.fromkeys(
        ("site-b", "site-c"), "delivered")
    assert status(fed, job_id)["state"] == "unreachable"
    # The job goes on at the institution: its worker host still reaches the node's data.
    wait_for(lambda: _node_state(fed, node_job) in FINAL, 120, "the job ending at site-a",
             fed)
    assert airlock_request(fed, job_id) is None

    fed.net.heal("site-a")
    # The hub's own rounds catch up, with nobody asking: outputs collected into the
    # airlock, the suspension list pushed (else site-a refuses every newer context), the
    # node's signed audit heads witnessed.
    wait_for(lambda: airlock_request(fed, job_id) is not None, 60,
             "the job's outputs collected", fed)
    wait_for(lambda: query(fed)["site-a"]["status"] in ANSWERED, 60,
             "site-a answering under the new suspension list", fed)
    wait_for(lambda: witnessed(fed, "site-a") > before, 60, "site-a's audit witnessed", fed)
    assert status(fed, job_id)["state"] == "succeeded"
    with fed.hub() as hub:
        refused = hub.post("/api/v1/query", json=IMAGING,
                           headers=fed.headers("mallory", "researcher"))
        assert refused.status_code == 403
        reinstated = hub.put(f"/api/v1/users/{mallory}/suspension",
                             json={"suspended": False, "reason": "test over"},
                             headers=fed.headers("root", "admin"))
    assert reinstated.json()["nodes"] == dict.fromkeys(SITES, "delivered")


def _node_state(fed: Federation, node_job: str) -> str:
    import psycopg

    url = fed.admin_urls["site-a"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT state FROM jobs WHERE id = %s", (node_job,)).fetchone()[0]


def _node_audited(fed: Federation, site: str, action: str, obj: str) -> int:
    """How many entries of `action` on `obj` the node's own audit log holds (its operator's
    view, in the node's database)."""
    import psycopg

    url = fed.admin_urls[site].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM audit_log WHERE action = %s AND object = %s",
                            (action, obj)).fetchone()[0]
