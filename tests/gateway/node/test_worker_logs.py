"""The job worker's log, as an operator reads it: one structured line at each job's start,
staging and end (state, duration, the runner's reason), never what staging or the job
said; and its metrics (jobs by state, staging throughput)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gateway.node.jobs.staging import StagingError
from spe.observability import ServiceMetrics
from spe.observability.logging import log_handler
from spe.wire.jobs import STAGING_FAILED
from tests.gateway.node.test_job_worker import SAFE_CSV, _enqueue, _worker, node  # noqa: F401

PATIENT = "pseudo0000000003"


@pytest.fixture
def lines():
    stream = io.StringIO()
    handler = log_handler("json", stream)
    logger = logging.getLogger("gateway.node.jobs.worker")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _events(lines, job_id: str) -> list[dict]:
    return [e for e in lines() if e.get("job") == job_id]


def test_a_failed_staging_is_logged_with_its_kind_not_its_words(node, lines):  # noqa: F811
    sessions, tmp, _ = node

    def stage(job):
        raise StagingError(f"line 7 of Patient.ndjson ({PATIENT})")

    metrics = ServiceMetrics("worker")
    job_id = _enqueue(sessions, tmp, "print(1)\n")
    assert _worker(sessions, tmp, tmp, stage=stage, metrics=metrics).run_once()
    events = _events(lines, job_id)
    assert [e["event"] for e in events] == ["job.start", "staging.start", "staging.failed",
                                            "job.end"]
    end = events[-1]
    assert (end["level"], end["state"], end["reason"]) == ("WARNING", "failed", STAGING_FAILED)
    assert isinstance(end["duration_ms"], int)
    assert events[2]["error"] == "StagingError"
    assert all(e["permit"] == "P-1" for e in events)
    assert PATIENT not in json.dumps(lines())
    assert metrics.jobs.labels("failed")._value.get() == 1


def test_a_job_that_ran_logs_its_staging_throughput_and_end(node, lines):  # noqa: F811
    sessions, tmp, extract = node
    metrics = ServiceMetrics("worker")
    job_id = _enqueue(sessions, tmp, SAFE_CSV)
    assert _worker(sessions, tmp, extract, metrics=metrics).run_once()
    events = {e["event"]: e for e in _events(lines, job_id)}
    assert list(events) == ["job.start", "staging.start", "staging.end", "job.end"]
    assert (events["staging.end"]["files"], events["staging.end"]["bytes"]) == (
        2, sum(p.stat().st_size for p in extract.iterdir()))
    assert events["job.end"]["state"] == "succeeded"
    assert events["job.end"]["level"] == "INFO"
    assert metrics.staged_files._value.get() == 2
    assert metrics.jobs.labels("succeeded")._value.get() == 1
    assert "done 40" not in json.dumps(lines())  # what the job printed stays in its output


def test_spe_node_worker_serves_its_metrics_on_its_own_port(tmp_path):
    import os
    import subprocess
    import sys
    import time

    import httpx

    from gateway.node.orthanc_process import free_port

    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SPE_")},
           "SPE_NODE_ID": "site-a", "SPE_DATABASE_URL": f"sqlite:///{tmp_path / 'node.db'}",
           "SPE_DATA_DIR": str(tmp_path / "data"), "SPE_METRICS_PORT": str(port),
           "SPE_LOG_FORMAT": "json", "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-m", "spe.cli", "node", "worker"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        text, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert 'spe_service_info{service="worker"} 1.0' in text, proc.poll()
        assert 'spe_job_queue_depth{state="queued"} 0.0' in text
        assert "spe_jobs_total" in text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    started = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(f"metrics on http://127.0.0.1:{port}/metrics" == e["message"] for e in started)


def test_staging_progress_is_logged_per_step_without_flooding(lines):
    from types import SimpleNamespace

    from gateway.node.jobs.worker import StagingProgress

    progress = StagingProgress(SimpleNamespace(id="J-7", pid="P-1", attempts=1), every=3600)
    for done in range(0, 401):
        progress("dicom", done, 400)
    progress("fhir", 0, 1)
    progress("fhir", 1, 1)
    logged = [(e["step"], e["done"], e["total"]) for e in lines()
              if e.get("event") == "staging.progress"]
    assert logged == [("dicom", 0, 400), ("dicom", 400, 400), ("fhir", 0, 1), ("fhir", 1, 1)]
