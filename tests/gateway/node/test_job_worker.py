"""Jobs at a node: durable state, workers that claim them atomically, the sandbox and the
airlock per job, and a worker killed mid-job (the job is retried or failed, never stuck)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.node.app import NODE_AUDIT
from gateway.node.jobs import repository as repo
from gateway.node.jobs.models import NodeJob
from gateway.node.jobs.worker import Worker, write_log
from spe.audit import NodeAuditEntry
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.sandbox import SandboxResult
from spe.settings import REPO_ROOT
from spe.wire.code_archive import CodeArchiveError, pack_code, read_code, unpack_code
from spe.wire.jobs import LOG_NAME
from tests.processes import alive, in_sandbox

LIMITS = {"cpu_seconds": 20, "memory_mb": 1024, "processes": 64, "open_files": 64,
          "file_size_mb": 20, "output_mb": 50, "scratch_mb": 64, "wall_seconds": 20}

SAFE_CSV = """
    import csv
    rows = list(csv.DictReader(open("/extract/data.csv")))
    with open("/output/counts.csv", "w") as f:
        f.write("group,n\\n")
        f.write(f"all,{len(rows) * 10}\\n")
    print("done", len(rows))
"""


@pytest.fixture
def node(database_url: str, tmp_path: Path):
    upgrade(database_url, "node")
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    extract = tmp_path / "extract"
    extract.mkdir()
    rows = "".join(f"{50 + i},{'FM'[i % 2]}\n" for i in range(40))
    (extract / "data.csv").write_text("age,sex\n" + rows)
    (extract / "sleep").write_text("0")
    yield sessions, tmp_path, extract
    engine.dispose()


def _code(tmp: Path, source: str) -> bytes:
    folder = tmp / f"src-{time.monotonic_ns()}"
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(source))
    return pack_code(folder)


def _enqueue(sessions, tmp: Path, source: str, **kw) -> str:
    kw.setdefault("limits", LIMITS)
    with session_scope(sessions) as s:
        return repo.enqueue(s, pid="P-1", user_id="ana@demo", code=_code(tmp, source),
                            **kw).id


def _job(sessions, job_id: str) -> NodeJob:
    with session_scope(sessions) as s:
        job = repo.get(s, job_id)
        s.expunge(job)
        return job


def _worker(sessions, tmp: Path, extract: Path, name: str = "w1", **kw) -> Worker:
    kw.setdefault("stage", lambda job: extract)
    return Worker(sessions, NODE_AUDIT, worker_id=name, work_dir=tmp / "work",
                  heartbeat_seconds=0.3, stale_after=1.0, **kw)


def job_log(tmp: Path, job_id: str) -> str:
    """The log the runner left among the job's outputs, as an operator reads it."""
    path = tmp / "work" / job_id / "output" / LOG_NAME
    return path.read_text() if path.exists() else ""


def _audit(sessions, action: str) -> list[NodeAuditEntry]:
    with session_scope(sessions) as s:
        rows = s.execute(select(NodeAuditEntry).where(NodeAuditEntry.action == action)
                         .order_by(NodeAuditEntry.seq)).scalars().all()
        s.expunge_all()
        return list(rows)


def _verified(sessions) -> bool:
    with session_scope(sessions) as s:
        return NODE_AUDIT.verify(s).ok


# --- code archives (no sandbox needed) ---------------------------------------------------

def test_code_archive_round_trip_and_traversal(tmp_path: Path) -> None:
    import io
    import tarfile

    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "main.py").write_text("print(1)\n")
    (src / "lib" / "util.py").write_text("X = 1\n")
    unpack_code(pack_code(src), tmp_path / "out")
    assert (tmp_path / "out" / "lib" / "util.py").read_text() == "X = 1\n"

    def evil(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, 0 if link else 1
            tar.addfile(info, None if link else io.BytesIO(b"x"))
        return buf.getvalue()

    for data in (evil("../escape.py"), evil("/etc/evil"), evil("a/../../x"),
                 evil("link", tarfile.SYMTYPE, "/etc/passwd"),
                 evil("hard", tarfile.LNKTYPE, "/etc/passwd"), b"not a tar"):
        with pytest.raises(CodeArchiveError):
            unpack_code(data, tmp_path / f"bad-{time.monotonic_ns()}")
        with pytest.raises(CodeArchiveError):  # a reviewer's read refuses the same
            read_code(data)
    assert not (tmp_path / "escape.py").exists()
    assert read_code(pack_code(src)) == {"lib/util.py": b"X = 1\n", "main.py": b"print(1)\n"}
    (src / "ln").symlink_to("/etc/passwd")
    with pytest.raises(CodeArchiveError):
        pack_code(src)


# --- state without the sandbox -------------------------------------------------------------

def test_final_jobs_are_never_claimed_and_queued_ones_cancel(node) -> None:
    sessions, tmp, _ = node
    first = _enqueue(sessions, tmp, "print(1)")
    second = _enqueue(sessions, tmp, "print(2)")
    with session_scope(sessions) as s:
        assert repo.cancel(s, second)
        assert not repo.cancel(s, second)  # already final
        job = repo.claim(s, "w1")
        assert job is not None
        assert (job.id, job.state) == (first, "staging")
        assert job.attempts == 1
        assert repo.finish(s, first, "w1", "succeeded", result={"x": 1})
        assert not repo.cancel(s, first)
    with session_scope(sessions) as s:
        assert repo.claim(s, "w2") is None  # one succeeded, one cancelled: nothing to take
        assert not repo.heartbeat(s, first, "w1")  # final: no longer held
        assert repo.requeue_stale(s, repo.utcnow() + timedelta(hours=1), 1.0) == []
    assert _job(sessions, second).state == "cancelled"
    assert _job(sessions, first).state == "succeeded"


def test_stale_job_requeued_then_failed_worker_lost(node) -> None:
    sessions, tmp, _ = node
    job_id = _enqueue(sessions, tmp, "print(1)", max_attempts=2)
    later = repo.utcnow() + timedelta(seconds=30)
    for attempt, expected in ((1, "queued"), (2, "failed")):
        with session_scope(sessions) as s:
            job = repo.claim(s, f"w{attempt}")
            assert job is not None
            assert job.attempts == attempt
            assert repo.requeue_stale(s, later, timedelta(seconds=5))[0].state == expected
        with session_scope(sessions) as s:  # the lost worker cannot write over it
            assert not repo.finish(s, job_id, f"w{attempt}", "succeeded")
    job = _job(sessions, job_id)
    assert (job.state, job.reason, job.attempts) == ("failed", repo.WORKER_LOST, 2)


# --- with the sandbox --------------------------------------------------------------------

@pytest.mark.usefixtures("needs_sandbox")
def test_safe_csv_job_succeeds_with_airlock_verdict(node) -> None:
    sessions, tmp, extract = node
    job_id = _enqueue(sessions, tmp, SAFE_CSV)
    worker = _worker(sessions, tmp, extract)
    assert worker.run_once()
    assert not worker.run_once()
    job = _job(sessions, job_id)
    assert job.state == "succeeded", (job.reason, job_log(tmp, job_id))
    assert job.result["sandbox"]["state"] == "succeeded"
    assert job.result["verdict"] == job.result["airlock"]["verdict"]
    assert job.result["verdict"] in ("pass", "review")
    # What the job printed is one of its outputs, checked like the table.
    assert [f["path"] for f in job.result["airlock"]["files"]] == ["counts.csv", LOG_NAME]
    assert "done 40" in job_log(tmp, job_id)
    assert job.log_tail == ""
    assert job.reason == ""
    assert (tmp / "work" / job_id / "output" / "counts.csv").is_file()
    assert job.finished_at is not None
    assert job.worker == "w1"
    finish = _audit(sessions, "job.finish")[-1]
    assert json.loads(finish.details)["state"] == "succeeded"
    assert json.loads(finish.details)["verdict"] == job.result["verdict"]
    assert _verified(sessions)


def test_outputs_that_are_not_there_have_no_verdict(tmp_path: Path) -> None:
    """The checks start from "pass"; what is shown for an empty output folder is "none"."""
    from spe.airlock import NO_VERDICT, OutputRules, check_outputs

    report = check_outputs(tmp_path, rules=OutputRules())
    assert (report.files, report.reasons) == ([], [])
    assert report.shown_verdict() == NO_VERDICT == "none"
    (tmp_path / "counts.csv").write_text("group,n\nall,40\n")
    assert check_outputs(tmp_path, rules=OutputRules()).shown_verdict() == "pass"


@pytest.mark.usefixtures("needs_sandbox")
def test_a_failed_job_with_no_outputs_has_no_verdict_not_pass(node) -> None:
    """A job that printed nothing, wrote nothing and failed leaves its (empty) log alone,
    which passes the checks; the job's verdict, in its record, the audit and the log line
    of its end, is "none", never the "pass" of an empty set of outputs."""
    sessions, tmp, extract = node
    job_id = _enqueue(sessions, tmp, "raise SystemExit(3)\n")
    assert _worker(sessions, tmp, extract).run_once()
    job = _job(sessions, job_id)
    assert job.state == "failed", (job.reason, job_log(tmp, job_id))
    assert [(f["path"], f["verdict"]) for f in job.result["airlock"]["files"]] == [
        (LOG_NAME, "pass")]  # the log's own verdict, for the output checkers
    assert job.result["verdict"] == "none"
    assert json.loads(_audit(sessions, "job.finish")[-1].details)["verdict"] == "none"


PSEUDONYM_COLUMN = """
    import json
    ids = [json.loads(line)["id"] for line in open("/extract/fhir/Patient.ndjson")]
    with open("/output/by_patient.csv", "w") as f:
        f.write("patient,group,n\\n")
        for i, pid in enumerate(ids):
            f.write(f"{pid},{'ab'[i % 2]},{20 + i}\\n")
"""


@pytest.mark.usefixtures("needs_sandbox")
def test_a_column_of_the_extracts_pseudonyms_is_blocked(node) -> None:
    """The worker scans outputs for the ids of the extract the job ran over: a table that
    repeats the same counts under its patients' pseudonyms does not pass."""
    sessions, tmp, extract = node
    (extract / "fhir").mkdir()
    ids = [f"pseudo{n:010d}" for n in range(6)]
    (extract / "fhir" / "Patient.ndjson").write_text("".join(
        json.dumps({"resourceType": "Patient", "id": i}) + "\n" for i in ids))
    job_id = _enqueue(sessions, tmp, PSEUDONYM_COLUMN)
    assert _worker(sessions, tmp, extract).run_once()
    job = _job(sessions, job_id)
    assert job.state == "succeeded", (job.reason, job_log(tmp, job_id))
    [table] = [f for f in job.result["airlock"]["files"] if f["path"] == "by_patient.csv"]
    assert table["verdict"] == "blocked"
    assert "6 patient ids from the extract: row 2, column 1; row 3, column 1; row 4, column " \
           "1; row 5, column 1; row 6, column 1; and 1 more" in table["reasons"], table


@pytest.mark.usefixtures("needs_sandbox")
def test_wall_limit_times_out(node) -> None:
    sessions, tmp, extract = node
    job_id = _enqueue(sessions, tmp, "import time\ntime.sleep(30)\n",
                      limits={**LIMITS, "wall_seconds": 1})
    started = time.monotonic()
    assert _worker(sessions, tmp, extract).run_once()
    assert time.monotonic() - started < 15
    job = _job(sessions, job_id)
    assert job.state == "timed_out", (job.reason, job_log(tmp, job_id))
    assert job.result["sandbox"]["limit"] == "wall"
    assert job.reason == "time limit"


@pytest.mark.usefixtures("needs_sandbox")
def test_two_workers_never_run_the_same_job(node) -> None:
    sessions, tmp, extract = node
    ids = [_enqueue(sessions, tmp, SAFE_CSV) for _ in range(6)]
    ran: dict[str, int] = {}

    def loop(name: str) -> None:
        worker = _worker(sessions, tmp, extract, name)
        count = 0
        while worker.run_once():
            count += 1
        ran[name] = count

    threads = [threading.Thread(target=loop, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(ran.values()) == len(ids)
    claims = [e.object for e in _audit(sessions, "job.claim")]
    assert sorted(claims) == sorted(f"job:{i}" for i in ids)  # each claimed exactly once
    for job_id in ids:
        job = _job(sessions, job_id)
        assert (job.state, job.attempts) == ("succeeded", 1), job.reason
    assert _verified(sessions)


WORKER_SCRIPT = """
import sys
from pathlib import Path
from gateway.node.app import NODE_AUDIT
from gateway.node.jobs.worker import Worker
from spe.db import make_engine, make_sessionmaker
url, work, extract = sys.argv[1:4]
sessions = make_sessionmaker(make_engine(url))
Worker(sessions, NODE_AUDIT, worker_id="doomed", work_dir=work,
       stage=lambda job: Path(extract), heartbeat_seconds=0.3, stale_after=1.0).run_once()
"""


@pytest.mark.usefixtures("needs_sandbox")
def test_worker_killed_mid_job_is_retried_never_stuck(node, database_url: str) -> None:
    sessions, tmp, extract = node
    slow = tmp / "slow-extract"
    slow.mkdir()
    (slow / "data.csv").write_text((extract / "data.csv").read_text())
    (slow / "sleep").write_text("60")
    sleepy = 'import time\ntime.sleep(float(open("/extract/sleep").read()))\n'
    job_id = _enqueue(sessions, tmp, sleepy + textwrap.dedent(SAFE_CSV), max_attempts=2)

    proc = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, database_url,
                             str(tmp / "work-doomed"), str(slow)], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while _job(sessions, job_id).state != "running":
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the worker never started the job"
            time.sleep(0.1)
        sandbox: set[int] = set()
        while not in_sandbox(proc.pid, sandbox):  # bwrap and the job under it
            assert time.monotonic() < deadline, "no sandbox under the worker"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in sandbox) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in sandbox), "the killed worker's sandbox lives on"

    job = _job(sessions, job_id)
    assert (job.state, job.worker, job.attempts) == ("running", "doomed", 1)
    with session_scope(sessions) as s:  # not stale yet: heartbeats are recent
        assert repo.requeue_stale(s, stale_after=timedelta(seconds=30)) == []
    time.sleep(1.2)
    fresh = _worker(sessions, tmp, extract, "fresh")
    stale = fresh.requeue_stale()
    assert [(j.id, j.state, j.worker) for j in stale] == [(job_id, "queued", "doomed")]
    assert fresh.run_once()
    job = _job(sessions, job_id)
    assert (job.state, job.worker, job.attempts) == ("succeeded", "fresh", 2), job.reason
    assert [e.object for e in _audit(sessions, "job.requeue")] == [f"job:{job_id}"]
    assert _verified(sessions)


@pytest.mark.usefixtures("needs_sandbox")
def test_revoking_the_permit_stops_its_running_job(node) -> None:
    """The node receives a revoked permit (cancel_for_permit, as its permit endpoint
    does): the running job's sandbox is killed at the worker's next heartbeat."""
    sessions, tmp, extract = node
    job_id = _enqueue(sessions, tmp, "import time\ntime.sleep(60)\n")
    queued = _enqueue(sessions, tmp, "print('never')\n")
    worker = _worker(sessions, tmp, extract)
    runner = threading.Thread(target=worker.run_once)
    started = time.monotonic()
    runner.start()
    for _ in range(300):
        if _job(sessions, job_id).state == "running":
            break
        time.sleep(0.05)
    with session_scope(sessions) as s:
        cancelled = repo.cancel_for_permit(s, "P-1", reason="permit revoked")
    assert set(cancelled) == {job_id, queued}
    runner.join(timeout=20)
    assert not runner.is_alive()
    assert time.monotonic() - started < 20  # not the job's 60 s
    job = _job(sessions, job_id)
    assert job.state == "cancelled"
    assert job.reason == "permit revoked"
    assert _job(sessions, queued).state == "cancelled"
    assert not worker.run_once()  # nothing left to run
    assert _verified(sessions)


def test_the_log_is_written_over_whatever_the_job_left_at_its_name(tmp_path: Path):
    """The runner's log replaces a file, a folder or a link the job put at its name, never
    writes through a link, and keeps whole lines only (half an id would pass a scan)."""
    fields = {f: None for f in SandboxResult.__dataclass_fields__}
    result = SandboxResult(**{**fields, "stdout_tail": "2345EFGH6789 x\nrow ok\n",
                              "stdout_bytes": 10_000, "stderr_tail": "oops\n",
                              "stderr_bytes": 5})
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    planted = {"file": lambda p: p.write_text("forged log"),
               "folder": lambda p: (p.mkdir(), (p / "x").write_text("x")),
               "link": lambda p: p.symlink_to(victim)}
    assert planted
    for kind, plant in planted.items():
        output = tmp_path / kind
        output.mkdir()
        plant(output / LOG_NAME)
        write_log(output, result)
        log = output / LOG_NAME
        assert log.is_file(), kind
        assert not log.is_symlink(), kind
        assert log.read_text() == ("[earlier output not kept]\nrow ok\n"
                                   "\n--- stderr ---\noops\n"), kind
    assert victim.read_text() == "untouched"
    silent = SandboxResult(**{**fields, "stdout_tail": "", "stdout_bytes": 0,
                              "stderr_tail": "", "stderr_bytes": 0})
    output = tmp_path / "silent"
    output.mkdir()
    (output / LOG_NAME).write_text("forged")
    write_log(output, silent)  # written even when empty: printing nothing is no signal
    assert (output / LOG_NAME).read_text() == ""


def test_a_staging_failure_tells_the_researcher_nothing_of_the_extract(node) -> None:
    """What staging says may name a patient, a file or a small count: the job's reason is
    the runner's words, and the staging error goes to the node's audit only."""
    from gateway.node.jobs.staging_errors import RiskRefused, StagingError
    from spe.wire.jobs import RISK_REFUSED, STAGING_FAILED

    sessions, tmp, _ = node
    failures = {
        StagingError("FHIR staging refused: line 7 of Patient.ndjson (pseudo0000000003)"):
            STAGING_FAILED,
        RiskRefused("denied: the extract's re-identification risk is above the threshold "
                    "(k=2 < 5)"): RISK_REFUSED,
    }
    assert failures
    for error, told in failures.items():
        def stage(job, error=error):
            raise error

        job_id = _enqueue(sessions, tmp, "print(1)\n")
        assert _worker(sessions, tmp, tmp, stage=stage).run_once()
        job = _job(sessions, job_id)
        assert (job.state, job.reason) == ("failed", told)
        [finish] = [e for e in _audit(sessions, "job.finish") if e.object == f"job:{job_id}"]
        assert str(error) in json.loads(finish.details)["detail"]  # for the operator


def test_a_job_whose_environment_is_gone_fails_and_never_runs_in_another(node) -> None:
    """Allowed at submission, removed from the node since: the worker fails the job before
    staging (nothing is staged for it) and does not fall back to the default one."""
    from spe.wire.jobs import NO_SANDBOX

    sessions, tmp, extract = node
    staged = []
    job_id = _enqueue(sessions, tmp, "print(1)\n", environment="imaging")
    worker = _worker(sessions, tmp, extract, stage=staged.append,
                     environments=lambda: {"statistics": sys.executable})
    assert worker.run_once()
    job = _job(sessions, job_id)
    assert (job.state, job.reason, job.environment) == ("failed", NO_SANDBOX, "imaging")
    assert staged == []
    [finish] = [e for e in _audit(sessions, "job.finish") if e.object == f"job:{job_id}"]
    assert "analysis environment 'imaging' is not installed" in json.loads(
        finish.details)["detail"]


@pytest.mark.usefixtures("needs_sandbox")
def test_a_job_runs_with_its_environments_interpreter(node) -> None:
    """The interpreter of the environment the job names, from the node's list."""
    sessions, tmp, extract = node
    job_id = _enqueue(sessions, tmp, "import sys\nprint('prefix', sys.prefix)\n",
                      environment="imaging")
    worker = _worker(sessions, tmp, extract,
                     environments=lambda: {"statistics": "/nonexistent/python",
                                           "imaging": sys.executable})
    assert worker.run_once()
    job = _job(sessions, job_id)
    assert job.state == "succeeded", job_log(tmp, job_id)
    [run] = [e for e in _audit(sessions, "job.run") if e.object == f"job:{job_id}"]
    assert json.loads(run.details)["environment"] == "imaging"
