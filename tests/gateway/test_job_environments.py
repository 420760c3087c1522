"""Analysis environments per job, end to end: the hub lists the environments with their
pins and refuses a name it does not list (422); each node's policy allows the environment
or refuses it with the reason (audited at the node); a job runs with its environment's
interpreter, so code importing SimpleITK succeeds under "imaging" and fails with an
ImportError under "statistics"."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import textwrap
import time
from contextlib import ExitStack
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
from spe.settings import REPO_ROOT, Settings
from spe.wire.code_archive import pack_code
from spe.wire.context import ContextSigner
from spe.wire.jobs import EXITED_WITH_ERROR, LOG_NAME
from tests.conftest import IN_CI
from tests.gateway.conftest import ISSUER, serve_job_federation
from tests.gateway.test_permit_tier import issue_permit

pytestmark = pytest.mark.usefixtures("needs_sandbox")

LIMITS = {"cpu_seconds": 60, "memory_mb": 1024, "processes": 64, "wall_seconds": 90}
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}

# What an imaging job does: a volume through an ITK filter, a figure written out.
USES_SIMPLEITK = """
    import SimpleITK as sitk

    image = sitk.Image(16, 16, 4, sitk.sitkFloat32)
    image[8, 8, 2] = 100.0
    smooth = sitk.SmoothingRecursiveGaussian(image, 1.0)
    stats = sitk.StatisticsImageFilter()
    stats.Execute(smooth)
    with open("/output/itk.csv", "w") as out:
        out.write(f"itk_version,size\\n{sitk.Version_VersionString()},{smooth.GetSize()[0]}\\n")
    print("SimpleITK", sitk.Version_VersionString())
"""


def built_environments() -> Path:
    """The environments `make analysis-env` built (SPE_ANALYSIS_ENVIRONMENTS, as `make`
    sets it); imaging among them, or this module cannot say anything."""
    folder = os.environ.get("SPE_ANALYSIS_ENVIRONMENTS", "")
    if not folder or not (Path(folder) / "imaging" / "bin" / "python").exists():
        reason = "no built imaging environment (make analysis-env; SPE_ANALYSIS_ENVIRONMENTS)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(folder)


@pytest.fixture(scope="module")
def federation(pki, node_dbs, tmp_path_factory):
    """Three nodes with the built environments and one job worker each; site-b's policy
    allows "statistics" only (an institution that has not accepted imaging work)."""
    built = built_environments()
    root = tmp_path_factory.mktemp("job-environments")
    settings = Settings(data_dir=root, oidc_issuer=ISSUER, pki_dir=pki,
                        environment="development", node_workers=1,
                        job_collect_interval_seconds=1, analysis_environments=built)
    policies = root / "policies-site-b"
    shutil.copytree(REPO_ROOT / "policies", policies)
    rego = policies / "jobs" / "jobs.rego"
    text, n = re.subn(r'(?m)^allowed_environments := \{[^}]*\}$',
                      'allowed_environments := {"statistics"}', rego.read_text())
    assert n == 1  # the allow-list line the institution edits is there
    rego.write_text(text)
    with ExitStack() as stack:
        central_db, urls = serve_job_federation(
            stack, settings, node_dbs,
            node_settings={"site-b": settings.model_copy(update={"policy_dir": policies})})
        app = create_central_app(settings.model_copy(update={
            "database_url": central_db, "federation_nodes": urls}))
        issuer = DemoIssuer(settings.issuer_key_path, ISSUER, "spe")
        client = stack.enter_context(TestClient(app))
        client.as_ = lambda user, role, inst=None: {  # type: ignore[attr-defined]
            "Authorization": "Bearer " + issuer.mint(user, [role], institution=inst)}
        client.data_dir = root  # type: ignore[attr-defined]
        yield client, urls, pki, node_dbs


@pytest.fixture(scope="module")
def permit(federation) -> str:
    hub = federation[0]
    return issue_permit(hub)  # over site-a and site-b, for carol


def _code(tmp: Path, source: str) -> str:
    folder = tmp / f"code-{time.monotonic_ns()}"
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(source))
    return base64.b64encode(pack_code(folder)).decode()


def _submit(hub, pid: str, code: str, **extra):
    body = {"permit": pid, "code": code, "entry": "main.py", "limits": LIMITS, **extra}
    return hub.post("/api/v1/jobs", json=body, headers=hub.as_("carol", "researcher"))


def _finished(hub, job_id: str, seconds: float = 180.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        resp = hub.get(f"/api/v1/jobs/{job_id}", headers=hub.as_("carol", "researcher"))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if all(n["state"] in FINAL for n in body["nodes"]) or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def _log(hub, node: dict) -> str:
    """The job's log where the node keeps it (the operator's view; the researcher reads
    it once the airlock releases it)."""
    return (hub.data_dir / "jobs" / node["node_id"] / node["job_id"] / "output"
            / LOG_NAME).read_text()


def _node_audit(db: Path, action: str) -> list[NodeAuditEntry]:
    engine = make_engine(f"sqlite:///{db}")
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            found = list(session.execute(select(NodeAuditEntry).where(
                NodeAuditEntry.action == action)).scalars())
            for entry in found:
                session.expunge(entry)
            return found
    finally:
        engine.dispose()


def test_the_hub_lists_each_environment_with_its_pins(federation):
    hub = federation[0]
    resp = hub.get("/api/v1/environments", headers=hub.as_("carol", "researcher"))
    assert resp.status_code == 200, resp.text
    listed = {e["name"]: e for e in resp.json()}
    assert {"statistics", "imaging"} <= set(listed)
    imaging = {p["name"]: p["version"] for p in listed["imaging"]["packages"]}
    assert imaging["SimpleITK"] == "2.5.7"
    assert {"pydicom", "numpy", "scikit-image"} <= set(imaging)
    statistics = {p["name"] for p in listed["statistics"]["packages"]}
    assert {"numpy", "pandas", "scikit-learn", "statsmodels", "acro", "flwr"} <= statistics
    assert "SimpleITK" not in statistics
    assert listed["statistics"]["default"] is True
    assert listed["imaging"]["default"] is False
    # The hub's own build of each (make analysis-env) says its Python.
    assert re.fullmatch(r"3\.\d+\.\d+", listed["imaging"]["python"] or ""), listed["imaging"]
    assert all(e["description"] for e in listed.values())
    # Signed-in users only: exact versions tell an attacker what is exploitable.
    assert hub.get("/api/v1/environments").status_code == 401


def test_an_imaging_job_imports_simpleitk_and_succeeds(federation, permit, tmp_path):
    hub = federation[0]
    resp = _submit(hub, permit, _code(tmp_path, USES_SIMPLEITK), nodes=["site-a"],
                   environment="imaging")
    assert resp.status_code == 202, resp.text
    assert resp.json()["environment"] == "imaging"
    body = _finished(hub, resp.json()["id"])
    node = body["nodes"][0]
    assert node["state"] == "succeeded", (node, _log(hub, node))
    assert body["environment"] == "imaging"
    assert "SimpleITK 2.5.7" in _log(hub, node)


def test_the_same_code_under_statistics_fails_with_an_import_error(federation, permit,
                                                                   tmp_path):
    hub = federation[0]
    code = _code(tmp_path, USES_SIMPLEITK)
    resp = _submit(hub, permit, code, nodes=["site-a"])  # no environment: statistics
    assert resp.status_code == 202, resp.text
    assert resp.json()["environment"] == "statistics"
    node = _finished(hub, resp.json()["id"])["nodes"][0]
    assert node["state"] == "failed"
    assert node["reason"] == EXITED_WITH_ERROR
    log = _log(hub, node)
    # ModuleNotFoundError is the ImportError of a module that is not there.
    assert "ModuleNotFoundError: No module named 'SimpleITK'" in log, log


def test_a_node_whose_policy_does_not_allow_it_refuses_with_the_reason(federation, permit,
                                                                       tmp_path):
    hub, _, _, dbs = federation
    resp = _submit(hub, permit, _code(tmp_path, USES_SIMPLEITK), environment="imaging")
    assert resp.status_code == 202, resp.text  # site-a takes it
    by_node = {n["node_id"]: n for n in resp.json()["nodes"]}
    assert by_node["site-a"]["submitted"] == "queued"
    reason = ('analysis environment "imaging" is not allowed at this node '
              '(allowed: statistics)')
    assert by_node["site-b"]["job_id"] is None
    assert reason in by_node["site-b"]["submitted"], by_node["site-b"]
    # The refusal is in site-b's own audit, with the environment asked for.
    refused = [e for e in _node_audit(dbs["site-b"], "job.submit")
               if e.decision == "deny" and reason in (e.reason or "")]
    assert refused
    assert json.loads(refused[-1].details)["environment"] == "imaging"
    assert _finished(hub, resp.json()["id"])["nodes"][0]["state"] == "succeeded"


def test_a_name_no_policy_allows_is_refused_at_the_node_even_without_the_hub(
        federation, permit, tmp_path):
    """A caller with the hub's key sends a name the hub would not: the node's policy
    refuses it itself, naming what it allows, and audits the refusal."""
    _, urls, pki, dbs = federation
    code = _code(tmp_path, "print('hello')\n")
    context = ContextSigner(private_key_of(pki / "hub.key")).sign(
        query_hash=hashlib.sha256(base64.b64decode(code)).hexdigest(),
        user=f"carol@{ISSUER}", roles=["researcher"], tier="permit", node_id="site-a",
        permit=permit)
    with httpx.Client(base_url=urls["site-a"], timeout=30,
                      verify=client_ssl_context(pki, "hub")) as node:
        direct = node.post("/api/v1/jobs", headers={"X-SPE-Hub-Context": context}, json={
            "code": code, "entry": "main.py", "limits": LIMITS, "environment": "gpu"})
        assert direct.status_code == 403, direct.text
        reason = ('denied: analysis environment "gpu" is not allowed at this node '
                  '(allowed: imaging, statistics)')
        assert direct.json()["detail"] == reason
        # Not a name at all: refused before any policy is asked (422, never a 500).
        bad = node.post("/api/v1/jobs", headers={"X-SPE-Hub-Context": context}, json={
            "code": code, "entry": "main.py", "limits": LIMITS, "environment": "../bin"})
        assert bad.status_code == 422, bad.text
    assert [e for e in _node_audit(dbs["site-a"], "job.submit")
            if e.decision == "deny" and e.reason == reason]


def test_an_unknown_environment_is_a_422_at_the_hub(federation, permit, tmp_path):
    hub = federation[0]
    code = _code(tmp_path, "print('hello')\n")
    resp = _submit(hub, permit, code, environment="gpu")
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == ("unknown analysis environment 'gpu'; known: imaging, "
                                     "statistics")
    for bad in ("Imaging", "../imaging", "", "x" * 40, 3):
        resp = _submit(hub, permit, code, environment=bad)
        assert resp.status_code == 422, (bad, resp.text)

