"""The airlock against a corpus of hostile and benign outputs (tests/spe/airlock_corpus.py),
over a real staged extract: synthetic records and images staged for a permit as a node
stages them (pseudonyms, UIDs, shifted dates, layer 3), the extract's terms read as the
node's worker reads them (`cached_terms`), and the outputs checked by the worker's entry
point (`check_outputs` with the rules of policies/disclosure).

Every hostile entry is blocked or sent to review, with reasons that name places and never
carry what was planted; at least 90% of the benign entries pass without review."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.node.config import NodeConfig
from gateway.node.jobs.staging import stage
from spe.airlock import AirlockReport, cached_terms, check_outputs, rules_from_policy
from spe.policy.service import make_policy_service
from spe.settings import Settings
from spe.synth import generate
from tests.gateway.node.test_staging import Permit
from tests.spe.airlock_corpus import BENIGN, HOSTILE, Extract

BENIGN_PASS_SHARE = 0.9


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("corpus")
    generate(out, institutions=1, patients=40, seed=7)
    root = out / "site-a"
    settings = Settings(data_dir=out / "var", secret_key="corpus-test-secret-0123456789abcdef")
    node = NodeConfig("site-a", "Site A", "sqlite://", dicom=f"folder:{root / 'dicom'}",
                      fhir=f"ndjson:{root / 'fhir'}")
    policy = make_policy_service(settings)
    extract = stage(Permit("P-CORPUS", "pseudonymised"), node=node, settings=settings,
                    policy=policy, cache_dir=out / "cache", data_version="v1")
    return Path(extract.path), policy


@pytest.fixture(scope="module")
def extract(staged) -> Extract:
    return Extract.read(staged[0])


def check(staged, out: Path) -> AirlockReport:
    """As the node's worker checks a finished job's output directory."""
    folder, policy = staged
    return check_outputs(out, rules=rules_from_policy(policy), extract_terms=cached_terms(folder))


def run(name: str, builders, staged, extract: Extract, tmp_path: Path
        ) -> tuple[AirlockReport, list[str]]:
    out = tmp_path / name
    out.mkdir()
    secrets = builders[name](out, extract)
    return check(staged, out), secrets


def _leaks(report: AirlockReport, secrets: list[str]) -> list[str]:
    said = json.dumps([[f.reasons, f.notes] for f in report.files] + [report.reasons])
    return [s for s in secrets
            if re.search(rf"(?<![\w.]){re.escape(s)}(?![\w])", said, re.IGNORECASE)]


def test_the_corpus_is_built_from_a_real_extract(staged, extract: Extract):
    terms = cached_terms(staged[0])
    assert len(extract.pseudonyms) == 40
    assert extract.mrns
    assert extract.dicom_ids
    assert terms.lookup(extract.pseudonyms[0]) == "patient id"
    assert len(HOSTILE) >= 25
    assert len(BENIGN) >= 15


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_output_is_blocked_or_reviewed_naming_places_not_values(
        name, staged, extract, tmp_path):
    report, secrets = run(name, HOSTILE, staged, extract, tmp_path)
    flagged = [f for f in report.files if f.verdict != "pass"]
    assert report.verdict in {"blocked", "review"}
    assert flagged, [(f.path, f.verdict, f.reasons) for f in report.files]
    for entry in flagged:
        assert entry.reasons
        assert not any("could not be checked" in r for r in entry.reasons), entry.reasons
    places = [p for f in flagged for p in f.places]
    assert places, [f.reasons for f in flagged]  # the checkers are shown where to look
    assert not _leaks(report, secrets)


def test_block_reasons_never_quote_the_blocked_value(staged, extract, tmp_path):
    """A blocked file still leaked its small cells: "cell of 2 at row 5"."""
    out = tmp_path / "cells"
    out.mkdir()
    (out / "counts.csv").write_text("modality,n\nCT,25\nMR,2\nUS,40\n")
    (out / "ids.csv").write_text("patient,n\n" + "".join(
        f"{p},12\n" for p in extract.pseudonyms[:6]))
    report = check(staged, out)
    counts, ids = report.file("counts.csv"), report.file("ids.csv")
    assert counts.verdict == ids.verdict == "blocked"
    assert counts.reasons == ["1 count below the threshold of 10: row 3, column 2"]
    assert [(p.rule, p.line, p.column) for p in counts.places] == [("small-count", 3, 2)]
    said = json.dumps(ids.model_dump())
    assert not any(p[:4].lower() in said.lower() for p in extract.pseudonyms[:6])


def test_the_corpus_figures(staged, extract, tmp_path, capsys):
    hostile = {name: run(name, HOSTILE, staged, extract, tmp_path)[0].verdict
               for name in sorted(HOSTILE)}
    benign = {name: run(name, BENIGN, staged, extract, tmp_path)[0]
              for name in sorted(BENIGN)}
    assert hostile
    assert benign
    crashed = [n for n, r in benign.items() for f in r.files
               if any("could not be checked" in x for x in f.reasons)]
    assert not crashed
    passed = [n for n, r in benign.items() if r.verdict == "pass"]
    share = len(passed) / len(benign)
    with capsys.disabled():
        print(f"\nairlock corpus: hostile: {list(hostile.values()).count('blocked')} blocked, "
              f"{list(hostile.values()).count('review')} review, "
              f"{list(hostile.values()).count('pass')} pass (of {len(hostile)}); "
              f"benign: {share:.0%} pass ({len(passed)} of {len(benign)}; not passing: "
              + ", ".join(f"{n} {r.verdict}" for n, r in benign.items() if n not in passed)
              + ")")
    assert "pass" not in hostile.values()
    assert share >= BENIGN_PASS_SHARE, {n: [f.reasons for f in r.files]
                                        for n, r in benign.items() if n not in passed}


ATTACK_JOB = r'''
import base64, hashlib, json, os
from datetime import datetime
patients = [json.loads(x) for x in open("/extract/fhir/Patient.ndjson")]
observations = [json.loads(x) for x in open("/extract/fhir/Observation.ndjson")]
def finding(o):
    return o["code"].get("text") or [c["display"] for c in o["code"]["coding"]][0]
def week(o):
    y, w, _ = datetime.fromisoformat(o["effectiveDateTime"]).isocalendar()
    return f"{y}-W{w:02d}"
open("/output/ids.txt", "w").write("".join(p["id"][::-1] + "\n" for p in patients))
open("/output/codes.csv", "w").write("code,weight\n" + "".join(
    f"{int.from_bytes(base64.b32decode(p['id'].upper()), 'big')},{60 + i}\n"
    for i, p in enumerate(patients)))
open("/output/counts.json", "w").write(json.dumps({"female": 7, "male": 33}))
open("/output/result.txt", "w").write("Result\n\nTwo patients had a glioma.\n")
os.mkdir("/output/records")
for i, o in enumerate(observations[:277]):
    open(f"/output/records/r{i:03d}.csv", "w").write(
        f"finding,week\n{finding(o)},{week(o)}\n")
weights = [o for o in observations if finding(o) == "Body weight"][:12]
open("/output/output_0_0.csv", "w").write("group,mean_weight\n" + "".join(
    f"g{i},{o['valueQuantity']['value']}\n" for i, o in enumerate(weights)))
json.dump({"version": "0.4.12", "results": {"output_0": {
    "uid": "output_0", "status": "pass", "type": "table", "summary": "pass",
    "files": [{"name": "output_0_0.csv"}], "comments": [], "exception": ""}}},
    open("/output/results.json", "w"))
os.mkdir("/output/checksums")
digest = hashlib.sha256(open("/output/output_0_0.csv", "rb").read()).hexdigest()
open("/output/checksums/output_0_0.csv.txt", "w").write(digest)
print("done")
'''


@pytest.mark.usefixtures("needs_sandbox")
def test_a_job_writing_the_hostile_outputs_gets_no_pass_at_the_node(staged, extract, tmp_path):
    """The attacks run as a job in the sandbox over the staged extract, checked by the
    node's worker as it checks every job: no output passes, no reason carries a value."""
    from gateway.node.app import NODE_AUDIT
    from gateway.node.jobs import repository as repo
    from gateway.node.jobs.worker import Worker
    from spe.db import make_engine, make_sessionmaker, session_scope
    from spe.db.migrate import upgrade
    from tests.gateway.node.test_job_worker import LIMITS, _code, _job

    url = f"sqlite:///{tmp_path / 'node.db'}"
    upgrade(url, "node")
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        with session_scope(sessions) as s:
            job_id = repo.enqueue(s, pid="P-CORPUS", user_id="eve@demo",
                                  code=_code(tmp_path, ATTACK_JOB), limits=LIMITS).id
        worker = Worker(sessions, NODE_AUDIT, worker_id="w", work_dir=tmp_path / "work",
                        stage=lambda job: staged[0])
        assert worker.run_job(job_id)
        job = _job(sessions, job_id)
    finally:
        engine.dispose()
    assert job.state == "succeeded", (job.reason, job.log_tail)
    files = {f["path"]: f for f in job.result["airlock"]["files"]}
    assert len(files) > 277
    assert not [p for p, f in files.items() if f["verdict"] == "pass"]  # > 50 files: review
    assert files["output_0_0.csv"]["verdict"] == "review"  # ACRO's forged pass spared nothing
    for path in ("ids.txt", "codes.csv", "counts.json", "result.txt"):
        assert files[path]["verdict"] == "blocked", files[path]
        assert files[path]["places"], files[path]
    said = json.dumps(job.result["airlock"]).lower()
    assert not [p for p in extract.pseudonyms if p in said or p[::-1] in said]
    assert '"two' not in said
