"""Collecting a job part's outputs into the airlock happens once, however many collectors
(status reads, the periodic sweep, other central processes) reach it at the same time."""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from gateway.hub.collect import _record
from spe.airlock.review.models import AirlockRequest
from spe.db import session_scope
from spe.jobs.models import CentralJob
from spe.wire.outputs import JobOutputs, OutputFile
from tests.spe.test_airlock_review import central, pid  # noqa: F401 - fixtures
from tests.spe.test_permits import uid

TABLE = b"site,modality,count\nsite-a,MR,20\n"


def test_concurrent_collectors_record_one_request(central, pid):  # noqa: F811
    ctx = central.ctx
    job_id, node_job = uuid.uuid4().hex, uuid.uuid4().hex
    with session_scope(ctx.sessions) as session:
        session.add(CentralJob(id=job_id, pid=pid, user_id=uid("carol"), code_sha256="0" * 64,
                               entry="main.py", limits={}, created_at=datetime.now(UTC),
                               nodes={"site-a": {"job_id": node_job, "outcome": "queued"}}))
    outputs = JobOutputs(
        job_id=node_job, node_id="site-a", pid=pid, user_id=uid("carol"), verdict="pass",
        report=[{"path": "counts.csv", "verdict": "pass", "size": len(TABLE)}],
        files=[OutputFile(path="counts.csv", sha256=hashlib.sha256(TABLE).hexdigest(),
                          data=base64.b64encode(TABLE).decode())])

    start, results, errors = threading.Barrier(6), [], []

    def collector() -> None:
        start.wait()
        try:
            results.append(_record(ctx, job_id, "site-a", outputs, "collected"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=collector) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    with session_scope(ctx.sessions) as session:
        requests = session.execute(select(AirlockRequest.id)
                                   .where(AirlockRequest.job_id == job_id)).scalars().all()
        audited = session.execute(select(func.count()).select_from(ctx.audit.entry_model)
                                  .where(ctx.audit.entry_model.action == "job.outputs")
                                  ).scalar_one()
        job = session.get(CentralJob, job_id)
        assert job.nodes["site-a"]["airlock"] == requests[0]
    assert len(requests) == 1
    assert set(results) == {requests[0]}  # every collector names the one request
    assert audited == 1
