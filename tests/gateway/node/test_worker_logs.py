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
