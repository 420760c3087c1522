"""Jobs under a permit end to end: the hub sends a job to the permit's institutions over
mutual TLS, each node decides on its own copy of the permit (policies/jobs), its worker
stages the extract and runs the code in the sandbox, and the hub follows and cancels it."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from spe.app import create_central_app
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.identity import DemoIssuer
from spe.pki import client_ssl_context, private_key_of
from spe.settings import Settings
from spe.wire.code_archive import pack_code
from spe.wire.context import ContextSigner
from spe.wire.jobs import EXITED_WITH_ERROR, LOG_NAME, MAX_ARCHIVE_BYTES, JobStatus
from tests.gateway.conftest import ISSUER, SITES, serve_job_federation
from tests.gateway.test_permit_tier import issue_permit

pytestmark = pytest.mark.usefixtures("needs_sandbox")

LIMITS = {"cpu_seconds": 60, "memory_mb": 1024, "processes": 64, "open_files": 128,
          "file_size_mb": 20, "output_mb": 20, "scratch_mb": 64, "wall_seconds": 60}

COUNT_MODALITIES = """
    import collections
    import pathlib

    import pydicom

    counts = collections.Counter()
    for path in sorted(pathlib.Path("/extract/dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            counts[str(getattr(ds, "Modality", "") or "unknown")] += 1
    with open("/output/counts.csv", "w") as out:
        out.write("modality,n\\n")
        for modality, n in sorted(counts.items()):
            out.write(f"{modality},{n}\\n")
    print("modalities", dict(counts))
"""

SLEEP = """
    import time
    print("sleeping", flush=True)
    time.sleep(50)
"""


@pytest.fixture(scope="module")
def job_sites(tmp_path_factory) -> dict[str, Path]:
    """Three institutions of 150 patients, indexed: large enough that layer 3 keeps age
    (as 10-year bands) when it makes the extracts reach k >= 5 (the shared 40-patient
    sites lose age altogether)."""
    from gateway.node.service import run_sync
    from spe.synth import generate

    root = tmp_path_factory.mktemp("job-sites")
    generate(root / "synth", institutions=3, patients=150, seed=21)
    dbs = {}
    for site in SITES:
        dbs[site] = root / f"{site}.db"
        run_sync(f"sqlite:///{dbs[site]}", dicom=f"folder:{root / 'synth' / site / 'dicom'}",
                 fhir=f"ndjson:{root / 'synth' / site / 'fhir'}")
    return dbs


@pytest.fixture(scope="module")
def federation(pki, job_sites, tmp_path_factory):
    """Three nodes under uvicorn with mutual TLS, each with one job worker (its lifespan),
    and the central app as the hub; yields (hub client, node URLs)."""
    root = tmp_path_factory.mktemp("jobs")
    settings = Settings(data_dir=root, oidc_issuer=ISSUER, pki_dir=pki,
                        environment="development", node_workers=1,
                        job_collect_interval_seconds=1)
    with ExitStack() as stack:
        central_db, urls = serve_job_federation(stack, settings, job_sites)
        app = create_central_app(settings.model_copy(update={
            "database_url": central_db, "federation_nodes": urls}))
        issuer = DemoIssuer(settings.issuer_key_path, ISSUER, "spe")
        client = stack.enter_context(TestClient(app))
        client.as_ = lambda user, role, inst=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}
        client.data_dir = root  # type: ignore[attr-defined]
        yield client, urls, pki


@pytest.fixture(scope="module")
def permit(federation) -> str:
    hub, _, _ = federation
    return issue_permit(hub)  # over site-a and site-b, for carol


def _code(tmp: Path, source: str) -> str:
    folder = tmp / f"code-{time.monotonic_ns()}"
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(source))
    return base64.b64encode(pack_code(folder)).decode()


def _submit(hub, pid: str, code: str, user: str = "carol", **extra):
    body = {"permit": pid, "code": code, "entry": "main.py", "limits": LIMITS, **extra}
    return hub.post("/api/v1/jobs", json=body, headers=hub.as_(user, "researcher"))


def _wait(hub, job_id: str, done, user: str = "carol", seconds: float = 120.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        resp = hub.get(f"/api/v1/jobs/{job_id}", headers=hub.as_(user, "researcher"))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


FINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def test_a_job_runs_at_the_permit_institutions(federation, permit, tmp_path):
    hub, _, _ = federation
    resp = _submit(hub, permit, _code(tmp_path, COUNT_MODALITIES))
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert {n["node_id"]: n["submitted"] for n in job["nodes"]} == {
        "site-a": "queued", "site-b": "queued"}
    body = _wait(hub, job["id"], lambda b: all(n["state"] in FINAL for n in b["nodes"]))
    for node in body["nodes"]:
        assert node["state"] == "succeeded", node
        assert node["reason"] == ""
        # How the extract was made, not what it holds: no counts, no risk figures.
        assert node["staging"]["layers"], node["staging"]
        assert node["staging"]["allowed"] is True
        assert not {"counts", "k", "max_risk", "seconds"} & set(node["staging"])
        # What it printed and wrote goes through the airlock, nowhere else.
        assert not {"log_tail", "files", "verdict", "exit_code"} & set(node)
    # An output checker may follow it; another researcher may not.
    assert hub.get(f"/api/v1/jobs/{job['id']}",
                   headers=hub.as_("olga", "output_checker")).status_code == 200
    assert hub.get(f"/api/v1/jobs/{job['id']}",
                   headers=hub.as_("mallory", "researcher")).status_code == 403


def test_targets_and_members_are_checked_at_the_hub(federation, permit, tmp_path):
    hub, _, _ = federation
    code = _code(tmp_path, COUNT_MODALITIES)
    outside = _submit(hub, permit, code, nodes=["site-c"])
    assert outside.status_code == 403
    assert "site-c" in outside.json()["detail"]
    stranger = _submit(hub, permit, code, user="mallory")
    assert stranger.status_code == 403


def test_limits_above_the_policy_are_refused_with_the_reason(federation, permit, tmp_path):
    hub, _, _ = federation
    resp = _submit(hub, permit, _code(tmp_path, SLEEP),
                   limits={**LIMITS, "wall_seconds": 7200})
    assert resp.status_code == 403, resp.text
    detail = resp.json()["detail"]
    assert "wall_seconds 7200 > 3600" in detail
    # Said once for the nodes that said it, in words: no HTTP statuses nor raw answers.
    assert detail.startswith("no node accepted the job: site-a, site-b: "), detail
    assert detail.count("wall_seconds 7200 > 3600") == 1, detail
    assert "HTTP" not in detail


def test_limits_no_node_would_take_are_refused_in_words(federation, permit, tmp_path):
    """Out of the sandbox's bounds: the hub refuses once, naming the field; a node asked
    directly says the same (no pydantic dump with its link, no value echoed)."""
    hub, urls, pki = federation
    code = _code(tmp_path, SLEEP)
    resp = _submit(hub, permit, code, limits={**LIMITS, "memory_mb": 10})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == "limits are not valid: memory_mb: must be at least 64"
    raw = base64.b64decode(code)
    context = ContextSigner(private_key_of(pki / "hub.key")).sign(
        query_hash=hashlib.sha256(raw).hexdigest(), user=f"carol@{ISSUER}",
        roles=["researcher"], tier="permit", node_id="site-a", permit=permit)
    with httpx.Client(base_url=urls["site-a"], timeout=10,
                      verify=client_ssl_context(pki, "hub")) as node:
        direct = node.post("/api/v1/jobs", headers={"X-SPE-Hub-Context": context}, json={
            "code": code, "entry": "main.py", "limits": {**LIMITS, "memory_mb": 10}})
    assert direct.status_code == 422, direct.text
    assert direct.json()["detail"] == "limits are not valid: memory_mb: must be at least 64"


def test_a_node_takes_jobs_from_its_hub_only(federation, permit, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    _, urls, pki = federation
    code = base64.b64decode(_code(tmp_path, SLEEP))
    body = {"code": base64.b64encode(code).decode(), "entry": "main.py", "limits": LIMITS}
    sha = hashlib.sha256(code).hexdigest()
    claims = {"user": f"carol@{ISSUER}", "roles": ["researcher"], "tier": "permit",
              "node_id": "site-a", "permit": permit}
    forged = ContextSigner(ec.generate_private_key(ec.SECP256R1())).sign(
        query_hash=sha, **claims)
    other_code = ContextSigner(private_key_of(pki / "hub.key")).sign(
        query_hash=hashlib.sha256(b"other code").hexdigest(), **claims)
    with httpx.Client(base_url=urls["site-a"], timeout=10,
                      verify=client_ssl_context(pki, "hub")) as client:
        for context in (forged, other_code, None):
            headers = {"X-SPE-Hub-Context": context} if context else {}
            resp = client.post("/api/v1/jobs", json=body, headers=headers)
            assert resp.status_code == 401, resp.text


def test_cancel(federation, permit, tmp_path, job_sites):
    from sqlalchemy import select

    from spe.audit import NodeAuditEntry

    hub, _, _ = federation
    resp = _submit(hub, permit, _code(tmp_path, SLEEP), nodes=["site-a"])
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    _wait(hub, job_id, lambda b: b["nodes"][0]["state"] == "running", seconds=30)
    assert hub.post(f"/api/v1/jobs/{job_id}/cancel",
                    headers=hub.as_("mallory", "researcher")).status_code == 403
    cancelled = hub.post(f"/api/v1/jobs/{job_id}/cancel", headers=hub.as_("carol", "researcher"))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["nodes"][0]["state"] == "cancelled"
    # The worker kills the sandbox at its next heartbeat; the job stays cancelled.
    node_job = cancelled.json()["nodes"][0]["job_id"]
    engine = make_engine(f"sqlite:///{job_sites['site-a']}")
    deadline, finished = time.monotonic() + 15, []
    while not finished and time.monotonic() < deadline:
        time.sleep(0.5)
        with session_scope(make_sessionmaker(engine)) as session:
            finished = [(e.decision, e.details) for e in session.execute(
                select(NodeAuditEntry).where(NodeAuditEntry.action == "job.finish",
                                             NodeAuditEntry.object == f"job:{node_job}")
            ).scalars()]
    engine.dispose()
    assert finished
    assert finished[0][0] == "error"  # the worker no longer held the job
    assert json.loads(finished[0][1])["recorded"] is False
    body = _wait(hub, job_id, lambda b: True)
    assert body["nodes"][0]["state"] == "cancelled"
    assert "carol" in body["nodes"][0]["reason"]


def _cli(hub, monkeypatch, user: str):
    """`spe job ...` as `user`, through the test client."""
    from typer.testing import CliRunner

    import spe.cli.http
    from spe.cli.main import app

    def through_test_client(method, url, *, json=None, params=None, timeout=None,
                            headers=None, content=None):
        return hub.request(method, url, json=json, params=params, headers=headers,
                           content=content)

    monkeypatch.setattr(spe.cli.http.httpx, "request", through_test_client)
    token = hub.as_(user, "researcher")["Authorization"].split()[1]
    env = {"COLUMNS": "200", "SPE_HUB_URL": "http://testserver", "SPE_TOKEN": token}

    def run(*args: str):
        return CliRunner().invoke(app, ["job", *args], env=env)

    return run


def test_the_cli_submits_follows_and_cancels(federation, permit, tmp_path, monkeypatch):
    hub, _, _ = federation
    run = _cli(hub, monkeypatch, "carol")
    code = tmp_path / "job"
    code.mkdir()
    (code / "main.py").write_text(textwrap.dedent(COUNT_MODALITIES))

    submitted = run("submit", "--permit", permit, "--node", "site-b", "--wall-seconds",
                    "60", str(code))
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.output.splitlines()[0]
    assert "site-b: queued" in submitted.output
    # staging 150 patients on a busy machine
    waited = run("status", job_id, "--wait", "--timeout", "120", "--json")
    assert waited.exit_code == 0, waited.output
    node = json.loads(waited.stdout)["nodes"][0]
    assert node["state"] == "succeeded", node
    assert "site-b: succeeded" in waited.stderr  # the last of its progress lines
    listed = run("list")
    assert listed.exit_code == 0, listed.output
    assert job_id in listed.output
    assert "site-b: succeeded" in listed.output
    shown = run("status", job_id)
    assert "succeeded" in shown.output
    assert "counts.csv" not in shown.output  # named once released, in `spe job outputs`
    logs = run("logs", job_id)
    assert logs.exit_code == 0, logs.output
    assert "modalities" not in logs.output
    assert "(not released)" in logs.output
    cancelled = run("cancel", job_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert "succeeded" in cancelled.output  # too late: it had finished
    refused = run("submit", "--permit", permit, "--node", "site-c", str(code))
    assert refused.exit_code == 1
    assert "site-c" in refused.output


PER_SITE_TABLE = """
    import collections
    import csv
    import json
    import pathlib
    import shutil

    import pydicom

    # Age bands by the patients' pseudonyms (images carry the same one as records): layer 3
    # left each patient's age at first study as a band in an extension, not a birth date.
    BAND = "urn:spe:fhir:extension:age-band-at-first-study"
    bands = {}
    for line in open("/extract/fhir/Patient.ndjson"):
        patient = json.loads(line)
        band = next((e["valueString"] for e in patient.get("extension", [])
                     if e.get("url") == BAND), "unknown")
        for ident in patient.get("identifier", []):
            bands[ident.get("value")] = band

    images = collections.Counter()
    for path in sorted(pathlib.Path("/extract/dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            images[(str(ds.Modality), bands.get(str(ds.PatientID), "unknown"))] += 1
    with open("/output/images_by_modality_and_age.csv", "w", newline="") as out:
        table = csv.writer(out)
        table.writerow(["modality", "age_band", "images"])
        for (modality, age_band), n in sorted(images.items()):
            if n >= 10:  # small cells are left out here; the airlock checks again
                table.writerow([modality, age_band, n])
    print("cells", len(images))
    # And the raw extract too: the airlock must stop this at the node.
    first = next(p for p in sorted(pathlib.Path("/extract/dicom").rglob("*")) if p.is_file())
    shutil.copy(first, "/output/raw_image.dcm")
    shutil.copy("/extract/fhir/Patient.ndjson", "/output/patients.ndjson")
"""


def test_a_federated_job_passes_the_airlock_and_is_downloaded(federation, permit, tmp_path,
                                                               monkeypatch):
    """Per-site tables over two institutions: the raw extract is blocked at each node and
    never reaches the centre; the tables are released by two output checkers and the
    researcher downloads them."""
    hub, _, _ = federation
    resp = hub.post("/api/v1/jobs", headers=hub.as_("carol", "researcher"), json={
        "permit": permit, "script": textwrap.dedent(PER_SITE_TABLE), "limits": LIMITS})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    body = _wait(hub, job_id, lambda b: all(n["state"] in FINAL and n["airlock"]
                                            for n in b["nodes"]))
    assert {n["node_id"]: n["state"] for n in body["nodes"]} == {
        "site-a": "succeeded", "site-b": "succeeded"}, body
    outputs = hub.get(f"/api/v1/jobs/{job_id}/outputs", headers=hub.as_("carol", "researcher"))
    assert outputs.status_code == 200, outputs.text
    (mine,) = outputs.json()  # one request for the job, a section per site
    assert (mine["state"], mine["files"], mine["reasons"]) == ("pending", [], [])
    assert sorted(s["node_id"] for s in mine["sites"]) == ["site-a", "site-b"]
    seen = hub.get(f"/api/v1/airlock/requests/{mine['id']}",
                   headers=hub.as_("olga", "output_checker"))
    assert seen.status_code == 200, seen.text  # an output checker reads the whole request
    request, rid = seen.json(), mine["id"]
    assert request["state"] == "pending"
    assert request["awaiting"] == []
    path = "images_by_modality_and_age.csv"
    for node in ("site-a", "site-b"):
        files = {f["path"]: f for f in request["files"] if f["node_id"] == node}
        assert set(files) == {path, "raw_image.dcm", "patients.ndjson", LOG_NAME}, files
        for raw in ("raw_image.dcm", "patients.ndjson"):
            assert files[raw]["verdict"] == "blocked"
            assert not files[raw]["stored"]
            assert any(r.startswith(f"at {node}: ") for r in files[raw]["reasons"])
        table = files[path]
        assert table["stored"], table
        assert table["verdict"] in {"pass", "review"}, table
        assert table["name"] == f"{node}/{path}"

    # Two output checkers look at each site's table and approve the request once.
    tables = {}
    for node in ("site-a", "site-b"):
        seen = hub.get(f"/api/v1/airlock/requests/{rid}/inspect/{node}/{path}",
                       headers=hub.as_("olga", "output_checker"))
        assert seen.status_code == 200, seen.text
        assert seen.text.startswith("modality,age_band,images")
        rows = list(csv.DictReader(io.StringIO(seen.text)))
        assert rows
        assert all(re.fullmatch(r"\d+-\d+", r["age_band"]) for r in rows), rows
        tables[node] = seen.content
        # Neither the requester nor anyone may read what is still under review.
        assert hub.get(f"/api/v1/airlock/requests/{rid}/files/{node}/{path}",
                       headers=hub.as_("carol", "researcher")).status_code == 409
        assert hub.get(f"/api/v1/airlock/requests/{rid}/inspect/{node}/raw_image.dcm",
                       headers=hub.as_("olga", "output_checker")).status_code == 403
    for checker in ("olga", "oscar"):
        review = hub.post(f"/api/v1/airlock/requests/{rid}/reviews",
                          headers=hub.as_(checker, "output_checker"),
                          json={"decision": "approve", "reason": "counts of 10 or more"})
        assert review.status_code == 200, review.text
    assert review.json()["state"] == "released"
    for node in ("site-a", "site-b"):
        got = hub.get(f"/api/v1/airlock/requests/{rid}/files/{node}/{path}",
                      headers=hub.as_("carol", "researcher"))
        assert got.status_code == 200, got.text
        assert got.content == tables[node]
        assert hashlib.sha256(got.content).hexdigest() == got.headers["x-checksum-sha256"]
        assert f'filename="{node}_{path}"' in got.headers["content-disposition"]
        # What was blocked never left the node, and a guess cannot confirm its name: a
        # blocked file is refused as one that does not exist.
        blocked = hub.get(f"/api/v1/airlock/requests/{rid}/files/{node}/raw_image.dcm",
                          headers=hub.as_("carol", "researcher"))
        guessed = hub.get(f"/api/v1/airlock/requests/{rid}/files/{node}/no_such_output.csv",
                          headers=hub.as_("carol", "researcher"))
        assert blocked.status_code == 403
        assert (blocked.status_code, blocked.json()) == (guessed.status_code, guessed.json())

    # Released, the requester reads the released files' names, and only theirs.
    mine = hub.get(f"/api/v1/airlock/requests/{rid}", headers=hub.as_("carol", "researcher")
                   ).json()
    names = {f["name"] for f in mine["files"]}
    assert {f"site-a/{path}", f"site-b/{path}"} <= names
    assert names == {f["name"] for f in request["files"] if f["stored"]}
    assert not any("raw_image.dcm" in n for n in names)

    # The same from the command line: the released outputs, then the files.
    run = _cli(hub, monkeypatch, "carol")
    listed = run("outputs", job_id)
    assert listed.exit_code == 0, listed.output
    assert f"request {rid}: released" in listed.output
    assert f"site-a/{path}" in listed.output
    assert "raw_image.dcm" not in listed.output
    fetched = run("download", job_id, "--to", str(tmp_path / "out"))
    assert fetched.exit_code == 0, fetched.output
    written = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert {f"site-a/{path}", f"site-b/{path}"} <= set(written)
    assert set(written) <= {f"{site}/{name}" for site in ("site-a", "site-b")
                            for name in (path, LOG_NAME)}
    if f"site-a/{LOG_NAME}" in written:  # the log, released with the table
        assert "cells" in run("logs", job_id).output


def test_a_node_gives_outputs_to_the_central_airlock_only(federation, permit, tmp_path):
    """Straight at the node with a correctly hub-signed context: the job's own user does
    not get the outputs, only the hub's collector does."""
    hub, urls, pki = federation
    resp = _submit(hub, permit, _code(tmp_path, COUNT_MODALITIES), nodes=["site-a"])
    assert resp.status_code == 202, resp.text
    job = _wait(hub, resp.json()["id"], lambda b: b["nodes"][0]["state"] in FINAL)
    node_job = job["nodes"][0]["job_id"]
    signer = ContextSigner(private_key_of(pki / "hub.key"))
    qh = hashlib.sha256(node_job.encode()).hexdigest()
    with httpx.Client(base_url=urls["site-a"], timeout=10,
                      verify=client_ssl_context(pki, "hub")) as client:
        def ask(user: str, roles: list[str]) -> httpx.Response:
            context = signer.sign(user=user, roles=roles, tier="permit", query_hash=qh,
                                  node_id="site-a", permit=permit)
            return client.get(f"/api/v1/jobs/{node_job}/outputs",
                              headers={"X-SPE-Hub-Context": context})

        assert ask(f"carol@{ISSUER}", ["researcher"]).status_code == 403
        assert ask(f"carol@{ISSUER}", ["airlock"]).status_code == 403
        assert ask(f"olga@{ISSUER}", ["output_checker"]).status_code == 403
        collected = ask("hub:airlock", ["airlock"])
        assert collected.status_code == 200, collected.text
        answer = collected.json()
        assert [f["path"] for f in answer["report"]] == ["counts.csv", LOG_NAME]
        assert [f["path"] for f in answer["files"]] == [
            f["path"] for f in answer["report"] if f["verdict"] != "blocked"]


def test_who_reads_and_cancels_a_job(federation, permit, tmp_path):
    """policies/jobs `access`, at the hub and again at the node: the researcher reads and
    cancels; an output checker reads (the node agrees), never cancels; others neither."""
    hub, _, _ = federation
    resp = _submit(hub, permit, _code(tmp_path, SLEEP), nodes=["site-b"])
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    checker = hub.get(f"/api/v1/jobs/{job_id}", headers=hub.as_("olga", "output_checker"))
    assert checker.status_code == 200, checker.text
    assert checker.json()["nodes"][0]["state"] in {"queued", "staging", "running"}
    assert hub.post(f"/api/v1/jobs/{job_id}/cancel",
                    headers=hub.as_("olga", "output_checker")).status_code == 403
    refused = hub.post(f"/api/v1/jobs/{job_id}/cancel",
                       headers=hub.as_("mallory", "researcher"))
    assert refused.status_code == 403
    assert "only the job's own user cancels it" in refused.text
    other = hub.get(f"/api/v1/jobs/{job_id}", headers=hub.as_("mallory", "researcher"))
    assert other.status_code == 403
    assert "another user's" in other.text
    assert hub.post(f"/api/v1/jobs/{job_id}/cancel",
                    headers=hub.as_("carol", "researcher")).status_code == 200


def test_outputs_reach_the_checkers_queue_without_anyone_asking(federation, permit,
                                                                tmp_path):
    """The central service collects finished jobs on its own: an output checker's queue
    fills although the researcher never looked at the job again."""
    hub, _, _ = federation
    resp = _submit(hub, permit, _code(tmp_path, COUNT_MODALITIES), nodes=["site-b"])
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    deadline, queued = time.monotonic() + 45, []
    while not queued and time.monotonic() < deadline:
        time.sleep(0.5)
        queue = hub.get("/api/v1/airlock/requests", headers=hub.as_("olga", "output_checker"))
        assert queue.status_code == 200, queue.text
        queued = [r for r in queue.json() if r["job_id"] == job_id]
    assert [([s["node_id"] for s in r["sites"]], r["requester"]) for r in queued] == [
        (["site-b"], f"carol@{ISSUER}")]
    assert [f["name"] for f in queued[0]["files"]] == ["site-b/counts.csv",
                                                       f"site-b/{LOG_NAME}"]
    # The job's own view names the request; a failed job's part has none.
    job = hub.get(f"/api/v1/jobs/{job_id}", headers=hub.as_("carol", "researcher")).json()
    assert job["nodes"][0]["airlock"] == queued[0]["id"]
    assert job["nodes"][0]["outputs"] == "collected"
    mine = hub.get("/api/v1/jobs", headers=hub.as_("carol", "researcher"))
    assert mine.status_code == 200
    assert job_id in [j["id"] for j in mine.json()]
    assert job_id not in [j["id"] for j in hub.get(
        "/api/v1/jobs", headers=hub.as_("mallory", "researcher")).json()]


def test_a_failed_part_sends_its_log_alone(federation, permit, tmp_path):
    """Its other outputs are neither sent nor named; the log goes even when empty, so
    whether a failed job printed anything is no signal either."""
    hub, _, _ = federation
    failing = "open('/output/x.csv', 'w')\nraise SystemExit(3)\n"
    resp = _submit(hub, permit, _code(tmp_path, failing), nodes=["site-a"])
    assert resp.status_code == 202, resp.text
    body = _wait(hub, resp.json()["id"], lambda b: b["nodes"][0]["outputs"] is not None)
    node = body["nodes"][0]
    assert node["state"] == "failed"
    assert node["reason"] == EXITED_WITH_ERROR
    assert node["outputs"] == "no outputs: the job failed; its log collected"
    request = hub.get(f"/api/v1/airlock/requests/{node['airlock']}",
                      headers=hub.as_("olga", "output_checker")).json()
    assert [(f["path"], f["size"]) for f in request["files"]] == [(LOG_NAME, 0)]


def test_a_part_that_never_ran_has_no_outputs(federation, permit, tmp_path):
    hub, _, _ = federation
    resp = _submit(hub, permit, _code(tmp_path, SLEEP), nodes=["site-b"])
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    cancelled = hub.post(f"/api/v1/jobs/{job_id}/cancel", headers=hub.as_("carol", "researcher"))
    assert cancelled.status_code == 200, cancelled.text
    body = _wait(hub, job_id, lambda b: b["nodes"][0]["outputs"] is not None)
    node = body["nodes"][0]
    assert node["state"] == "cancelled"
    assert node["airlock"] is None
    assert node["outputs"] == "no outputs: the job cancelled"


# --- side channels around the airlock ----------------------------------------------------

#: Reads the extract and tries every channel but the airlock: the records, their
#: pseudonyms and a small count printed, outputs named after them, and (`EXIT`) an exit
#: status carrying the small count.
LEAKY = """
    import collections
    import json
    import sys

    BAND = "urn:spe:fhir:extension:age-band-at-first-study"
    rows = open("/extract/fhir/Patient.ndjson").read().splitlines()
    patients = [json.loads(row) for row in rows]
    bands = collections.Counter(
        next((e["valueString"] for e in p.get("extension", []) if e.get("url") == BAND), "?")
        for p in patients)
    smallest = min(bands.values())
    for row in rows:
        print("RECORD", row)
    for p in patients:
        print("PSEUDONYM", p["id"], file=sys.stderr)
    print("SMALLCOUNT", smallest)
    with open("/output/counts.csv", "w") as out:
        out.write("group,n\\n" + f"all,{len(patients) * 10}\\n")
    for p in patients[:20]:
        open(f"/output/{p['id']}.txt", "w").write("x\\n")
    open(f"/output/SMALLGROUP_{smallest}.csv", "w").write("group,n\\n")
    EXIT
"""


def _staged_patients(hub, permit: str, site: str) -> list[str]:
    """The Patient records of the extract staged for `permit` at `site`, as the node's
    operator finds them on disk."""
    found = sorted((hub.data_dir / "extracts" / site / permit).glob("*/fhir/Patient.ndjson"))
    assert found, "no staged extract"
    return found[-1].read_text().splitlines()


def _extract_ids(hub, permit: str, site: str) -> list[str]:
    """The pseudonyms and identifier values of that extract."""
    ids = set()
    for line in _staged_patients(hub, permit, site):
        patient = json.loads(line)
        ids.add(patient["id"])
        ids.update(i["value"] for i in patient.get("identifier", []) if i.get("value"))
    return sorted(ids)


def _everything_carol_reads(hub, job_id: str, monkeypatch) -> dict[str, str]:
    """Every surface the job's researcher can read about it: the API (job, list, cancel,
    outputs, airlock requests), the audit (refused) and `spe job` in each form."""
    carol = hub.as_("carol", "researcher")

    def this_job(path: str, key: str) -> str:  # lists hold her other jobs too
        listed = hub.get(path, headers=carol).json()
        mine = [entry for entry in listed if entry[key] == job_id]
        assert mine, listed
        return json.dumps(mine)

    seen = {
        "status": hub.get(f"/api/v1/jobs/{job_id}", headers=carol).text,
        "list": this_job("/api/v1/jobs", "id"),
        "cancel": hub.post(f"/api/v1/jobs/{job_id}/cancel", headers=carol).text,
        "outputs": hub.get(f"/api/v1/jobs/{job_id}/outputs", headers=carol).text,
        "airlock": this_job("/api/v1/airlock/requests", "job_id"),
    }
    for request in json.loads(seen["outputs"]):
        seen[f"airlock {request['id']}"] = hub.get(
            f"/api/v1/airlock/requests/{request['id']}", headers=carol).text
    audit = hub.get("/api/v1/audit", headers=carol)
    assert audit.status_code == 403  # the audit's details are the operator's
    run = _cli(hub, monkeypatch, "carol")
    for args in (["status", job_id], ["status", job_id, "--json"], ["logs", job_id],
                 ["outputs", job_id], ["outputs", job_id, "--json"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        seen["spe job " + " ".join(args)] = result.output
    return seen


def _assert_absent(seen: dict[str, str], secrets: list[str]) -> None:
    assert secrets
    assert seen
    for surface, text in seen.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {surface}: {text[:2000]}"


def test_nothing_a_failing_job_prints_names_or_returns_reaches_its_researcher(
        federation, permit, tmp_path, monkeypatch):
    """The job prints its records, pseudonyms and a small count, names outputs after them
    and exits with status 3: its researcher reads "failed" and the runner's words, nowhere
    any of that; the log goes to the airlock's checkers (and alone: a failed job's other
    outputs are never sent)."""
    hub, _, _ = federation
    source = textwrap.dedent(LEAKY).replace("EXIT", "sys.exit(3)")
    resp = _submit(hub, permit, _code(tmp_path, source), nodes=["site-a"])
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    body = _wait(hub, job_id, lambda b: b["nodes"][0]["outputs"] is not None)
    [node] = body["nodes"]
    assert node["state"] == "failed", node
    assert node["reason"] == EXITED_WITH_ERROR
    assert not {"exit_code", "signal", "log_tail", "files", "verdict"} & set(node)
    seen = _everything_carol_reads(hub, job_id, monkeypatch)
    # The node's own answer, asked as the hub asks it for her, says no more.
    _, urls, pki = federation
    context = ContextSigner(private_key_of(pki / "hub.key")).sign(
        user=f"carol@{ISSUER}", roles=["researcher"], tier="permit", node_id="site-a",
        permit=permit, query_hash=hashlib.sha256(node["job_id"].encode()).hexdigest())
    with httpx.Client(base_url=urls["site-a"], timeout=10,
                      verify=client_ssl_context(pki, "hub")) as client:
        direct = client.get(f"/api/v1/jobs/{node['job_id']}",
                            headers={"X-SPE-Hub-Context": context})
    assert direct.status_code == 200, direct.text
    assert set(direct.json()) <= set(JobStatus.model_fields)
    seen["node status"] = direct.text
    records = _staged_patients(hub, permit, "site-a")
    _assert_absent(seen, [*_extract_ids(hub, permit, "site-a"), *records, "RECORD",
                          "PSEUDONYM", "SMALLCOUNT", "SMALLGROUP", "exit code", "status 3"])
    # The checkers have the log (blocked here: it names the extract's patients).
    request = hub.get(f"/api/v1/airlock/requests/{node['airlock']}",
                      headers=hub.as_("olga", "output_checker")).json()
    assert [(f["path"], f["verdict"]) for f in request["files"]] == [(LOG_NAME, "blocked")]
    # Its every file blocked, the request was closed at once; carol reads why, per file.
    (closed,) = json.loads(seen["outputs"])
    assert closed["state"] == "closed"
    assert [f["name"] for f in closed["files"]] == ["site-a/file 1"]
    assert closed["files"][0]["reasons"]
    assert "closed" in seen[f"spe job outputs {job_id}"]


def test_output_names_stay_hidden_until_release(federation, permit, tmp_path, monkeypatch):
    """A job that succeeds with outputs named after its patients' pseudonyms and a small
    count: its researcher sees none of the names before release; the checkers see them."""
    hub, _, _ = federation
    source = textwrap.dedent(LEAKY).replace("EXIT", "")
    resp = _submit(hub, permit, _code(tmp_path, source), nodes=["site-a"])
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    body = _wait(hub, job_id, lambda b: b["nodes"][0]["airlock"] is not None)
    [node] = body["nodes"]
    assert node["state"] == "succeeded", node
    request = hub.get(f"/api/v1/airlock/requests/{node['airlock']}",
                      headers=hub.as_("olga", "output_checker")).json()
    names = [f["path"] for f in request["files"]]
    ids = _extract_ids(hub, permit, "site-a")
    named = [n for n in names if n.removesuffix(".txt") in ids]
    assert len(named) == 20, names  # the checkers do see what the job wrote
    assert any(n.startswith("SMALLGROUP_") for n in names)
    seen = _everything_carol_reads(hub, job_id, monkeypatch)
    _assert_absent(seen, [*named, *ids, "SMALLGROUP", "counts.csv", LOG_NAME])


def test_the_hub_and_the_nodes_share_one_code_limit(federation, permit):
    """One limit (spe.wire.jobs): packed code just over it is refused by the hub with a
    413 before any node is asked, and by a node the same way; code at the limit passes
    the hub and is queued by the node."""

    hub, urls, pki = federation
    carol = hub.as_("carol", "researcher")
    over = base64.b64encode(b"\0" * (MAX_ARCHIVE_BYTES + 1)).decode()
    before = hub.get("/api/v1/jobs", headers=carol).json()
    refused = hub.post("/api/v1/jobs", headers=carol, json={
        "permit": permit, "code": over, "nodes": ["site-a"], "limits": LIMITS})
    assert refused.status_code == 413, refused.text[:500]
    assert refused.json()["error"] == "code_too_large"
    assert "50 MiB" in refused.json()["detail"]
    assert hub.get("/api/v1/jobs", headers=carol).json() == before  # nothing sent

    code = b"\0" * (MAX_ARCHIVE_BYTES + 1)
    context = ContextSigner(private_key_of(pki / "hub.key")).sign(
        user=f"carol@{ISSUER}", roles=["researcher"], tier="permit", node_id="site-a",
        permit=permit, query_hash=hashlib.sha256(code).hexdigest())
    with httpx.Client(base_url=urls["site-a"], timeout=60,
                      verify=client_ssl_context(pki, "hub")) as client:
        direct = client.post("/api/v1/jobs", headers={"X-SPE-Hub-Context": context},
                             json={"code": over, "entry": "main.py", "limits": LIMITS})
    assert direct.status_code == 413, direct.text[:500]
    assert direct.json()["error"] == "code_too_large"

    at_limit = base64.b64encode(b"\0" * MAX_ARCHIVE_BYTES).decode()
    accepted = hub.post("/api/v1/jobs", headers=carol, json={
        "permit": permit, "code": at_limit, "nodes": ["site-a"], "limits": LIMITS})
    assert accepted.status_code == 202, accepted.text[:500]
    assert [n["submitted"] for n in accepted.json()["nodes"]] == ["queued"]
