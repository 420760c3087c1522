"""Hostile jobs, run as a node runs them (a worker: staging, the sandbox, the airlock) and
judged from the outside: each is contained or its outputs blocked, the job ends in a clear
state, the researcher reads only the runner's words about it, and the node's audit says
what happened (state, limit, each output's verdict)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from gateway.node.app import NODE_AUDIT
from gateway.node.jobs import repository as repo
from gateway.node.jobs.worker import Worker
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.wire.jobs import LOG_NAME, RUNNER_REASONS
from tests.gateway.node.test_job_worker import _audit, _code, _job

pytestmark = pytest.mark.usefixtures("needs_sandbox")

LIMITS = {"cpu_seconds": 20, "memory_mb": 1024, "processes": 64, "open_files": 64,
          "file_size_mb": 20, "output_mb": 50, "scratch_mb": 64, "wall_seconds": 6}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node's database, key and two permits' extracts on the host, and an API port."""
    root = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{root / 'node.db'}"
    upgrade(url, "node")
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    extract, other = root / "extracts" / "P-1", root / "extracts" / "P-2"
    for folder in (extract, other):
        (folder / "fhir").mkdir(parents=True)
    (extract / "fhir" / "Patient.ndjson").write_text("".join(
        json.dumps({"resourceType": "Patient", "id": f"pseudo{n:010d}"}) + "\n"
        for n in range(6)))
    (other / "fhir" / "Patient.ndjson").write_text('{"id": "another-permit"}\n')
    (root / "pki").mkdir()
    (root / "pki" / "node.key").write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    api = socket.socket()
    api.bind(("127.0.0.1", 0))
    api.listen()
    accepted: list[object] = []

    def serve() -> None:  # the node's API, as far as a job could tell
        api.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(api.accept()[0])
            except OSError:
                continue

    stop = threading.Event()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    paths = {"db": str(root / "node.db"), "key": str(root / "pki" / "node.key"),
             "other": str(other / "fhir" / "Patient.ndjson"), "port": api.getsockname()[1]}
    worker = Worker(sessions, NODE_AUDIT, worker_id="w", work_dir=root / "work",
                    stage=lambda job: extract, heartbeat_seconds=0.3, stale_after=1.0)
    yield sessions, root, worker, paths, accepted
    stop.set()
    thread.join(2)
    api.close()
    engine.dispose()


HOSTILE = {
    "node api on loopback": (
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
        "failed", None, "ConnectionRefusedError"),
    "resolve a host name": (
        "import socket\nsocket.getaddrinfo('example.org', 443)\n",
        "failed", None, "gaierror"),
    "read /etc/shadow": ("open('/etc/shadow').read()\n", "failed", None, "FileNotFoundError"),
    "read the node database": ("open('{db}', 'rb').read()\n", "failed", None,
                               "FileNotFoundError"),
    "read a key file": ("open('{key}').read()\n", "failed", None, "FileNotFoundError"),
    "read another permit's extract": ("open('{other}').read()\n", "failed", None,
                                      "FileNotFoundError"),
    "write outside the output": ("open('/extract/planted.csv', 'w').write('x')\n", "failed",
                                 None, "Read-only file system"),
    "fork bomb": ("import os\nwhile True:\n    os.fork()\n", "failed", "processes", ""),
    "allocate 10 GB": ("b = bytearray(10 * 1024 ** 3)\n", "failed", "memory", "MemoryError"),
    "loop forever": ("while True:\n    pass\n", "timed_out", "wall", ""),
    "write a 5 GB file": (
        "with open('/output/big.csv', 'wb') as f:\n"
        "    for _ in range(5 * 1024):\n        f.write(b'0' * 1024 ** 2)\n",
        "failed", "file_size", ""),
}

BLOCKED = {
    "a symlink to /etc/passwd": ("import os\nos.symlink('/etc/passwd', '/output/p.csv')\n",
                                 "p.csv", "link"),
    "a cell of 3": ("open('/output/t.csv', 'w').write('group,n\\na,3\\nb,40\\n')\n",
                    "t.csv", "below the threshold of 10: row 2, column 2"),
    "a column of pseudonyms": (
        "import json\nids = [json.loads(r)['id'] for r in open('/extract/fhir/Patient.ndjson')]\n"
        "open('/output/ids.csv', 'w').write('patient,n\\n' + ''.join("
        "f'{{i}},{{20 + n}}\\n' for n, i in enumerate(ids)))\n",
        "ids.csv", "patient id"),
}


def _log(node, job_id: str) -> str:
    """The log the runner left among the job's outputs (for the airlock), as the node's
    operator reads it."""
    path = node[2].job_dir(job_id) / "output" / LOG_NAME
    return path.read_text() if path.exists() else ""


def _run(node, source: str, limits: dict | None = None):
    """Run `source` (a str.format template over the host paths) as a node job."""
    sessions, root, worker, paths, _ = node
    with session_scope(sessions) as s:
        job_id = repo.enqueue(s, pid="P-1", user_id="eve@demo",
                              code=_code(root, source.format(**paths)),
                              limits=limits or LIMITS).id
    started = time.monotonic()
    assert worker.run_job(job_id)
    job = _job(sessions, job_id)
    [finish] = [e for e in _audit(sessions, "job.finish") if e.object == f"job:{job_id}"]
    return job, json.loads(finish.details), finish.reason, time.monotonic() - started


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_job_is_contained_and_audited(node, name: str) -> None:
    source, state, limit, trace = HOSTILE[name]
    job, audited, reason, seconds = _run(node, source)
    log = _log(node, job.id)
    assert job.state == state, (job.reason, log)
    assert seconds < 30
    assert audited["state"] == state
    assert audited["limit"] == limit
    assert reason == job.reason
    # The researcher reads the runner's words only: a limit it saw hit itself, else that
    # the job exited with an error; never an exit code or a signal.
    assert job.reason in RUNNER_REASONS, job.reason
    assert not any(c.isdigit() for c in job.reason)
    if trace:
        assert trace in log
    assert audited["verdict"] != "blocked" or audited["outputs"]
    assert node[4] == [], "a job reached the node's API"


@pytest.mark.parametrize("name", list(BLOCKED))
def test_a_disclosive_output_is_blocked_and_audited(node, name: str) -> None:
    source, path, why = BLOCKED[name]
    job, audited, _, _ = _run(node, source)
    assert job.state == "succeeded", (job.reason, _log(node, job.id))
    assert job.result["verdict"] == "blocked"
    assert audited["verdict"] == "blocked"
    assert audited["outputs"][path].startswith("blocked: ")
    assert why in audited["outputs"][path]


PRINT_THE_EXTRACT = (
    "import sys\n"
    "rows = open('/extract/fhir/Patient.ndjson').read()\n"
    "print('patients:', rows)\n"
    "print('first visit 2019-03-05 of', rows.split('\"id\": \"')[1][:16], file=sys.stderr)\n"
    "print('done: 6 patients')\n")


def test_printing_the_extract_leaves_only_through_the_airlock(node) -> None:
    """What the job prints is an output like any other: the log file is checked with the
    rest (the extract's ids in it block it), and the job's record, which the researcher
    reads, holds none of it."""
    job, audited, _, _ = _run(node, PRINT_THE_EXTRACT)
    assert job.state == "succeeded", (job.reason, _log(node, job.id))
    assert "pseudo0000000001" in _log(node, job.id)  # the runner kept it, for the airlock
    [log] = [f for f in job.result["airlock"]["files"] if f["path"] == LOG_NAME]
    assert log["verdict"] == "blocked"
    assert audited["outputs"][LOG_NAME].startswith("blocked: ")
    assert job.log_tail == ""
    assert job.reason == ""
    assert "stdout_tail" not in job.result["sandbox"]
    assert "pseudo" not in json.dumps(job.result)


def test_the_audit_chain_holds_after_all_of_it(node) -> None:
    with session_scope(node[0]) as s:
        assert NODE_AUDIT.verify(s).ok
