"""Jobs handed out by procrastinate on the node's PostgreSQL: any number of worker
processes (`spe node worker`, or the node's own event loop) take them; a worker killed
mid-job loses nothing (its job is queued again and run by another, or failed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from gateway.node.app import NODE_AUDIT, create_node_app
from gateway.node.config import NodeConfig
from gateway.node.jobs import dispatch
from gateway.node.jobs import repository as repo
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.settings import REPO_ROOT, Settings
from tests.gateway.node.test_job_worker import (
    LIMITS,
    SAFE_CSV,
    _audit,
    _code,
    _job,
    _verified,
)
from tests.processes import alive, cmdline, in_sandbox

pytestmark = pytest.mark.usefixtures("needs_sandbox")

WORKER = """
import sys
from pathlib import Path
from gateway.node.app import NODE_AUDIT
from gateway.node.jobs.dispatch import run_task_workers_blocking
from gateway.node.jobs.worker import Worker
from spe.db import make_engine, make_sessionmaker
url, name, work, extract = sys.argv[1:5]
worker = Worker(make_sessionmaker(make_engine(url)), NODE_AUDIT, worker_id=name,
                work_dir=work, stage=lambda job: Path(extract), heartbeat_seconds=0.3,
                stale_after=1.0)
run_task_workers_blocking(url, worker, concurrency=1, sweep_interval=0.5)
"""

SLEEPY = 'import time\ntime.sleep(float(open("/extract/sleep").read()))\n'


@pytest.fixture
def pg_node(postgres_url: str, tmp_path: Path):
    upgrade(postgres_url, "node")
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    extracts = {}
    for name, sleep in (("slow", "60"), ("fast", "0")):
        folder = tmp_path / f"extract-{name}"
        folder.mkdir()
        rows = "".join(f"{50 + i},{'FM'[i % 2]}\n" for i in range(40))
        (folder / "data.csv").write_text("age,sex\n" + rows)
        (folder / "sleep").write_text(sleep)
        extracts[name] = folder
    yield postgres_url, sessions, tmp_path, extracts
    engine.dispose()


def _submit(sessions, tmp: Path, dispatcher: dispatch.Dispatcher, source: str, *,
            idle: bool = True) -> str:
    """Queue a job and defer its task; `idle`: no worker runs yet, so a second deferral
    finds the first still waiting."""
    with session_scope(sessions) as s:
        job_id = repo.enqueue(s, pid="P-1", user_id="ana@demo", code=_code(tmp, source),
                              limits=LIMITS, max_attempts=2).id
    deferred = dispatcher.defer(job_id)  # (a running node's sweeper may have been first)
    if idle:
        assert deferred
        assert not dispatcher.defer(job_id)  # one waiting task per job
    return job_id


def _start(url: str, name: str, tmp: Path, extract: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, name, str(tmp / f"w-{name}"),
                             str(extract)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _until(check, seconds: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the worker died: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_killed_task_worker_loses_no_job(pg_node) -> None:
    url, sessions, tmp, extracts = pg_node
    dispatcher = dispatch.Dispatcher(url)
    try:
        sleepy = _submit(sessions, tmp, dispatcher, SLEEPY + textwrap.dedent(SAFE_CSV))
        doomed = _start(url, "doomed", tmp, extracts["slow"])
        try:
            _until(lambda: _job(sessions, sleepy).state == "running", 30,
                   "the first worker never started the job", doomed)
            sandbox: set[int] = set()
            _until(lambda: in_sandbox(doomed.pid, sandbox), 10, "no sandbox under the worker")
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(10)
        finally:
            if doomed.poll() is None:
                doomed.kill()
                doomed.wait()
            doomed.stderr.close()
        # Nothing of the job may outlive it: what bubblewrap's parent-death signal leaves
        # is reaped by the next worker's sweep (the job's pids cgroup).
        rescuer = _start(url, "rescuer", tmp, extracts["fast"])
        try:
            deadline = time.monotonic() + 15
            while any(alive(p) for p in sandbox) and time.monotonic() < deadline:
                time.sleep(0.1)
            living = {p: (cmdline(p)[:200], _stat(p)) for p in sandbox if alive(p)}
            assert not living, f"the killed worker's sandbox lives on: {living}"
            # Meanwhile another job is submitted; the second worker takes over both.
            other = _submit(sessions, tmp, dispatcher, SAFE_CSV, idle=False)
            _until(lambda: {_job(sessions, j).state for j in (sleepy, other)} == {"succeeded"},
                   60, "the second worker did not finish both jobs", rescuer)
            # A task the sweeper deferred while a job was changing hands does nothing
            # (the job is no longer queued) and is gone soon after.
            _until(lambda: _waiting_tasks(sessions) == 0, 20, "tasks left waiting", rescuer)
            rescuer.send_signal(signal.SIGTERM)  # procrastinate stops gracefully
            rescuer.wait(30)
        finally:
            if rescuer.poll() is None:
                rescuer.kill()
                rescuer.wait()
            rescuer.stderr.close()
    finally:
        dispatcher.close()
    retried = _job(sessions, sleepy)
    assert (retried.attempts, retried.worker) == (2, "rescuer")
    requeued = _audit(sessions, "job.requeue")
    assert [e.object for e in requeued] == [f"job:{sleepy}"]
    assert json.loads(requeued[0].details)["lost_worker"] == "doomed"
    assert _verified(sessions)


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()[:200]
    except OSError:
        return ""


def _waiting_tasks(sessions) -> int:
    with session_scope(sessions) as s:
        return s.execute(text("SELECT count(*) FROM procrastinate_jobs "
                              "WHERE status = 'todo'")).scalar()


def test_the_node_runs_task_queue_workers_in_its_own_process(pg_node, monkeypatch) -> None:
    url, sessions, tmp, extracts = pg_node
    from gateway.node.jobs import runtime

    # The node's data is not what is tested here: the job's extract is a fixed folder.
    monkeypatch.setattr(runtime, "make_stage", lambda *a, **k: lambda job: extracts["fast"])
    settings = Settings(data_dir=tmp / "data", node_workers=1)
    app = create_node_app(NodeConfig("site-pg", "site-pg", url), settings)
    with TestClient(app):
        dispatcher = app.state.job_dispatcher
        assert dispatcher is not None
        assert app.state.job_workers is None  # no polling threads on PostgreSQL
        job_id = _submit(sessions, tmp, dispatcher, SAFE_CSV, idle=False)
        _until(lambda: _job(sessions, job_id).state == "succeeded", 45,
               "the node's own task worker did not run the job")
    assert [e.object for e in _audit(sessions, "job.claim")] == [f"job:{job_id}"]
    with session_scope(sessions) as s:
        assert NODE_AUDIT.verify(s).ok
