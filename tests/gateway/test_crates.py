"""Five Safes RO-Crates end to end: a request crate sent as a job runs at the permit's
institutions, two output checkers release its table, and the result crate carries the
code, the released outputs and every check and review the audit log holds for the job;
both crates pass roc-validator, and a crate that is not one is refused with a reason."""

from __future__ import annotations

import io
import json
import textwrap
import zipfile
from pathlib import Path

import pytest

from spe.crate import request as request_crate
from spe.crate import terms
from spe.crate.bag import unpack
from tests.crates import validate
from tests.gateway.test_jobs import (  # noqa: F401  (fixtures)
    FINAL,
    PER_SITE_TABLE,
    _cli,
    _wait,
    federation,
    job_sites,
    permit,
)

pytestmark = pytest.mark.usefixtures("needs_sandbox")
ZIP = {"Content-Type": "application/zip"}


def _graph(folder: Path) -> dict[str, dict]:
    meta = json.loads((folder / "ro-crate-metadata.json").read_text())
    return {e["@id"]: e for e in meta["@graph"]}


def _audit(hub, objects: set[str]) -> list[dict]:
    """The central audit log's entries about `objects` (reading the log is audited too, so
    the last page is the first one short of the limit)."""
    entries, after, limit = [], 0, 1000
    while True:
        page = hub.get("/api/v1/audit", params={"after": after, "limit": limit},
                       headers=hub.as_("root", "admin"))
        assert page.status_code == 200, page.text
        entries += [e for e in page.json() if e["object"] in objects]
        if len(page.json()) < limit:
            return entries
        after = page.json()[-1]["seq"]


def test_a_request_crate_runs_and_its_result_crate_records_every_check(
        federation, permit, tmp_path):  # noqa: F811
    hub, _, _ = federation
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text(textwrap.dedent(PER_SITE_TABLE))
    crate = request_crate.write(code, permit=permit, nodes=["site-a", "site-b"],
                                requester="carol")
    sent_dir, _ = unpack(crate, tmp_path / "sent")
    assert validate(sent_dir) == []  # the request crate, as submitted

    resp = hub.post("/api/v1/jobs/crate", content=crate,
                    headers={**ZIP, **hub.as_("carol", "researcher")})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.json()["permit"] == permit
    body = _wait(hub, job_id, lambda b: all(n["state"] in FINAL and n["airlock"]
                                            for n in b["nodes"]))
    assert {n["state"] for n in body["nodes"]} == {"succeeded"}, body

    # Before release the result crate holds the code and the checks so far, no output.
    early = hub.get(f"/api/v1/jobs/{job_id}/crate", headers=hub.as_("carol", "researcher"))
    assert early.status_code == 200, early.text
    early_dir, _ = unpack(early.content, tmp_path / "early")
    assert not (early_dir / terms.OUTPUTS).exists()
    assert (early_dir / "code" / "main.py").read_text() == (code / "main.py").read_text()

    (request,) = hub.get(f"/api/v1/jobs/{job_id}/outputs",
                         headers=hub.as_("carol", "researcher")).json()
    for checker in ("olga", "oscar"):
        review = hub.post(f"/api/v1/airlock/requests/{request['id']}/reviews",
                          headers=hub.as_(checker, "output_checker"),
                          json={"decision": "approve", "reason": f"{checker}: counts >= 10"})
        assert review.status_code == 200, review.text
    assert review.json()["state"] == "released"

    got = hub.get(f"/api/v1/jobs/{job_id}/crate", headers=hub.as_("carol", "researcher"))
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/zip"
    folder, identifier = unpack(got.content, tmp_path / "result")  # BagIt sha-512 checked
    assert identifier.startswith("urn:uuid:")
    assert validate(folder) == [], validate(folder)
    graph = _graph(folder)
    root = graph["./"]
    assert root["conformsTo"] == {"@id": terms.FIVE_SAFES}
    assert graph[root["sourceOrganization"]["@id"]]["@type"] == "Project"
    mentioned = {m["@id"] for m in root["mentions"]}

    # Every check and review the audit log holds for the job and its request is there.
    checks = [e for e in _audit(hub, {f"job:{job_id}", request["id"]})
              if e["action"] in {"job.submit", "airlock.submit", "airlock.review",
                                 "airlock.release", "airlock.reject", "airlock.close"}]
    assert {e["action"] for e in checks} >= {"job.submit", "airlock.submit",
                                             "airlock.review", "airlock.release"}
    for entry in checks:
        action = graph[f"#audit-{entry['seq']}"]
        assert f"#audit-{entry['seq']}" in mentioned
        assert action["@type"] == "AssessAction"
        assert action["identifier"] == f"audit:{entry['seq']}"
        assert action["actionStatus"] == (terms.COMPLETED if entry["decision"] == "allow"
                                          else terms.FAILED)
    reviews = [e for e in graph.values() if e.get("@type") == "Comment"]
    assert sorted(c["text"] for c in reviews) == ["olga: counts >= 10",
                                                 "oscar: counts >= 10"]
    # The released tables, byte for byte what the airlock gives, and nothing blocked.
    released = sorted(p.relative_to(folder / terms.OUTPUTS).as_posix()
                      for p in (folder / terms.OUTPUTS).rglob("*") if p.is_file())
    assert "site-a/images_by_modality_and_age.csv" in released
    assert not any(n.endswith(("raw_image.dcm", "patients.ndjson")) for n in released)
    for name in released:
        direct = hub.get(f"/api/v1/airlock/requests/{request['id']}/files/{name}",
                         headers=hub.as_("carol", "researcher"))
        assert direct.content == (folder / terms.OUTPUTS / name).read_bytes()


def test_crates_that_are_not_requests_are_refused_with_a_reason(
        federation, permit, tmp_path):  # noqa: F811
    hub, _, _ = federation
    headers = {**ZIP, **hub.as_("carol", "researcher")}
    not_zip = hub.post("/api/v1/jobs/crate", content=b"hello", headers=headers)
    assert not_zip.status_code == 422
    assert "not a ZIP" in not_zip.json()["detail"]

    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("print('hi')\n")
    crate = request_crate.write(code, permit=permit, requester="carol")
    tampered = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(crate)) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("code/main.py"):
                data = b"import os\nprint(os.listdir('/extract'))\n"
            dst.writestr(item, data)
    refused = hub.post("/api/v1/jobs/crate", content=tampered.getvalue(), headers=headers)
    assert refused.status_code == 422
    assert "the bag is not valid" in refused.json()["detail"]

    escaping = io.BytesIO()
    with zipfile.ZipFile(escaping, "w") as zf:
        zf.writestr("bag/../../etc/x", b"x")
    assert "unsafe name" in hub.post("/api/v1/jobs/crate", content=escaping.getvalue(),
                                     headers=headers).json()["detail"]

    other = request_crate.write(code, permit="P-2026-00000000", requester="carol")
    unknown = hub.post("/api/v1/jobs/crate", content=other, headers=headers)
    assert unknown.status_code in (403, 404), unknown.text
    # A researcher who is not in the permit reads no job's crate.
    assert hub.get("/api/v1/jobs/nope/crate",
                   headers=hub.as_("carol", "researcher")).status_code == 404


def test_the_cli_writes_sends_and_fetches_crates(federation, permit, tmp_path,  # noqa: F811
                                                 monkeypatch):
    hub, _, _ = federation
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("print('hello')\n")
    run = _cli(hub, monkeypatch, "carol")
    written = run("crate", str(code), "--permit", permit, "--out", str(tmp_path / "r.zip"),
                  "--node", "site-a", "--requester", "carol")
    assert written.exit_code == 0, written.output
    again = run("crate", str(code), "--permit", permit, "--out", str(tmp_path / "r.zip"))
    assert again.exit_code == 2
    assert "already exists" in again.output
    sent = run("submit-crate", str(tmp_path / "r.zip"))
    assert sent.exit_code == 0, sent.output
    job_id = sent.output.split()[0]
    assert "site-a: queued" in sent.output
    _wait(hub, job_id, lambda b: all(n["state"] in FINAL for n in b["nodes"]))
    fetched = run("result-crate", job_id, "--out", str(tmp_path / "result.zip"))
    assert fetched.exit_code == 0, fetched.output
    folder, _ = unpack((tmp_path / "result.zip").read_bytes(), tmp_path / "result")
    assert validate(folder) == []
    assert (folder / "code" / "main.py").read_text() == "print('hello')\n"
    missing = run("submit-crate", str(tmp_path / "nope.zip"))
    assert missing.exit_code == 2
    assert "nope.zip" in missing.output
