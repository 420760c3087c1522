"""The whole path across hosts: the nodes answer the hub only; the catalogue is harvested
from them, a federated query answered by each, a permit pushed to each, and a job under it
runs on the worker host over the node's database and data folder, its outputs collected
into the airlock at the centre."""

from __future__ import annotations

import socket
import ssl
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from spe.pki import client_ssl_context
from tests.multihost.federation import KINDS, NODE_PORT, RELAY_PORT, SITES, Federation
from tests.multihost.jobs import (
    airlock_files,
    finished_with_outputs,
    node_job_row,
    submit,
    wait_job,
)

IMAGING = {"where": {"type": "imaging", "modality": ["CT", "MR"]}}


def _connects(fed: Federation, host: str | None, address: str, port: int) -> str:
    """'open', or how a TCP connection from `host` (None: the tests' own namespace) to
    `address:port` failed."""

    def attempt() -> str:
        try:
            # A local bridge answers in well under a millisecond; 1 s without any answer
            # (no SYN-ACK, no reset) is a dropped packet.
            socket.create_connection((address, port), timeout=1).close()
            return "open"
        except TimeoutError:
            return "dropped"
        except OSError as exc:
            return type(exc).__name__

    return attempt() if host is None else fed.net.inside(host, attempt)


def _probe(fed: Federation, probes: list[tuple[str | None, str, int]]) -> dict:
    """(from, address, port) -> what `_connects` saw, all tried at once."""
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        seen = pool.map(lambda p: _connects(fed, *p), probes)
    return dict(zip(probes, seen, strict=True))


def test_a_node_is_reachable_from_the_hub_only(federation: Federation):
    fed = federation
    expected = {}
    for site in SITES:
        address = fed.net.hosts[site].address
        expected[("central", address, NODE_PORT)] = "open"
        for other in ("worker", *(s for s in SITES if s != site), None):  # None: the tests
            expected[(other, address, NODE_PORT)] = "dropped"
    assert _probe(fed, list(expected)) == expected

    # And through TLS: the hub's certificate gets an answer; from the hub's host, a
    # client without a certificate or with another node's gets no answer at all.
    url = f"{fed.node_url('site-a')}/health"
    pki = fed.pki

    def call(verify) -> object:
        try:
            return httpx.get(url, verify=verify, timeout=5).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    assert fed.net.inside("central", lambda: call(client_ssl_context(pki, "hub"))) == 200
    bare = ssl.create_default_context(cafile=pki / "ca.crt")
    assert fed.net.inside("central", lambda: call(bare)) != 200
    assert fed.net.inside("central", lambda: call(client_ssl_context(pki, "site-b"))) != 200


def test_a_pacs_is_reachable_from_its_node_and_the_worker_host_only(federation: Federation):
    fed = federation
    expected = {}
    for site in ("site-b", "site-c"):
        address = fed.net.hosts[site].address
        expected[("worker", address, RELAY_PORT)] = "open"
        for other in ("central", *(s for s in SITES if s != site)):
            expected[(other, address, RELAY_PORT)] = "dropped"
    assert _probe(fed, list(expected)) == expected


def test_the_catalogue_is_harvested_from_every_node_over_the_network(federation, harvest,
                                                                     datasets):
    out = harvest.stdout + harvest.stderr
    assert harvest.returncode == 0, out
    assert out.count("created") == len(SITES), out
    with federation.hub() as hub:
        found = hub.get("/api/v1/catalogue/search", params={"size": 100}).json()
    hits = {h["node_id"]: h for h in found["results"]}
    assert set(hits) == set(SITES)
    for site, hit in hits.items():
        assert KINDS[site] in hit["node_name"]  # the node's own settings, as harvested
        assert hit["number_of_unique_individuals"] == 40  # over the threshold: exact
        assert hit["modalities"], hit


def test_a_federated_query_is_answered_by_every_kind_of_node(federation: Federation):
    fed = federation
    with fed.hub() as hub:
        answer = hub.post("/api/v1/query", json=IMAGING,
                          headers=fed.headers("alice", "researcher"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # 40 patients a site: a site's count may be under the threshold (marked suppressed).
    statuses = {n["node_id"]: n["status"] for n in body["nodes"]}
    assert set(statuses) == set(SITES), body
    assert set(statuses.values()) <= {"answered", "suppressed"}, body
    for node in body["nodes"]:
        assert node["answer"]["node_id"] == node["node_id"]


def test_a_permit_is_pushed_to_every_node_and_its_tier_answers(federation, permit):
    fed = federation
    assert permit["pushed"] == dict.fromkeys(SITES, "delivered"), permit
    with fed.hub() as hub:
        answer = hub.post(f"/api/v1/query?permit={permit['id']}", json=IMAGING,
                          headers=fed.headers("carol", "researcher"))
        stranger = hub.post(f"/api/v1/query?permit={permit['id']}", json=IMAGING,
                            headers=fed.headers("mallory", "researcher"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["tier"] == "permit"
    for node in body["nodes"]:  # exact counts from each node's copy of the permit
        assert node["status"] == "answered", node
        assert node["answer"]["total"]["perturbed"] is False, node
        assert node["answer"]["total"]["value"] > 0
    assert stranger.status_code == 403


def test_a_job_runs_on_the_worker_host_and_its_outputs_reach_the_airlock(federation, permit):
    fed = federation
    job_id = submit(fed, permit["id"], "site-a")
    node = wait_job(fed, job_id, finished_with_outputs)
    assert node["state"] == "succeeded", node
    assert node["attempts"] == 1
    # Run by the worker host's process, not by the node (which runs no worker).
    worker, attempts = node_job_row(fed, "site-a", node["job_id"])
    assert worker.endswith("/worker-host-site-a"), worker
    assert attempts == 1
    files = airlock_files(fed, job_id)
    assert "counts.csv" in files, files


@pytest.mark.parametrize("site", ["site-b", "site-c"], ids=["dicomweb", "dimse"])
def test_a_job_runs_at_a_node_in_front_of_a_pacs(federation, permit, site):
    fed = federation
    job_id = submit(fed, permit["id"], site)
    node = wait_job(fed, job_id, finished_with_outputs)
    assert node["state"] == "succeeded", node
    worker, _ = node_job_row(fed, site, node["job_id"])
    assert worker.endswith(f"/worker-host-{site}"), worker
    assert "counts.csv" in airlock_files(fed, job_id)
