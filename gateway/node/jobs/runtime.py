"""A node's own job workers: threads of the node process running `Worker.run_forever`,
started and stopped with the node app (its lifespan) when `SPE_NODE_WORKERS` > 0.

Each claimed job is staged first (`staging.stage`) from the node's copy of its permit into
`SPE_DATA_DIR/extracts/<node>/<pid>/<data version>` (the data version is the last sync
run's id, so a new sync stages afresh) and runs in `SPE_DATA_DIR/jobs/<node>/<job id>`.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gateway.node.config import NodeConfig
from gateway.node.index.repository import last_sync_run, study_uids
from gateway.node.jobs import staging
from gateway.node.jobs.endpoints import staging_progress_path, staging_summary_path
from gateway.node.jobs.models import NodeJob
from gateway.node.jobs.staging_errors import RiskRefused, StagingError
from gateway.node.jobs.worker import StagingProgress, Worker
from gateway.node.permits import repository as permits
from spe.audit import AuditLog
from spe.db import session_scope
from spe.policy import PolicyService
from spe.sandbox.environments import installed as installed_environments
from spe.settings import Settings
from spe.wire.jobs import StagingSummary

EXTRACT_POLICY = "jobs/extract"
SUMMARY_KEYS = ("data_version", "form", "layers", "pseudonymised", "key", "risk_ok",
                "staged_at")


def work_dir_of(settings: Settings, node_id: str) -> Path:
    return settings.data_dir / "jobs" / node_id


def cache_dir_of(settings: Settings, node_id: str) -> Path:
    return settings.data_dir / "extracts" / node_id


def make_stage(config: NodeConfig, settings: Settings, policy: PolicyService,
               sessions: sessionmaker[Session]) -> Callable[[NodeJob], Path]:
    work_dir = work_dir_of(settings, config.node_id)

    def stage_job(job: NodeJob) -> Path:
        with session_scope(sessions) as session:
            permit = permits.get(session, job.pid)
            if permit is None:
                raise StagingError(f"this node holds no permit {job.pid}")
            session.expunge(permit)
            run = last_sync_run(session)
            version = str(run.id) if run is not None else "0"
            # A permit covers the node's dataset: every study the sync indexed. A PACS
            # source is asked for these (a folder stages its files as they are).
            studies = study_uids(session)
        staged = staging.stage(permit, node=config, settings=settings, policy=policy,
                               cache_dir=cache_dir_of(settings, config.node_id),
                               data_version=version, workers=settings.staging_workers,
                               studies=studies, progress=StagingProgress(
                                   job, path=staging_progress_path(work_dir, job.id)))
        risk = staged.report.get("risk")
        risk = risk if isinstance(risk, dict) else {}
        reduction = risk.get("reduction") or {}
        # Whether the job may run over this extract at its measured risk (policies/jobs).
        decision = policy.decide(EXTRACT_POLICY, {
            "risk": {k: risk.get(k) for k in ("measured", "ok", "k", "k_wanted", "reason")},
            "layers": staged.report.get("layers")})
        # For the researcher, unreviewed: how the extract was made, never what it holds
        # (its counts, k, suppressed patients and the decision's words stay in report.json
        # and the audit, for the operator).
        summary = StagingSummary.model_validate({
            **{k: staged.report.get(k) for k in SUMMARY_KEYS if k in staged.report},
            "cached": staged.cached,
            "generalised": {qi: level for qi, level
                            in (reduction.get("levels") or {}).items() if level},
            "suppressed": bool(reduction.get("suppressed_patients")),
            "allowed": decision.allow})
        path = staging_summary_path(work_dir, job.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary.model_dump_json())
        if not decision.allow:
            raise RiskRefused(decision.reason)
        return staged.path

    return stage_job


def make_worker(config: NodeConfig, settings: Settings, policy: PolicyService,
                sessions: sessionmaker[Session], audit: AuditLog, name: str = "0",
                **worker_options) -> Worker:
    """A worker of this node, named `<node>@<host>:<pid>/<name>` in its jobs and audit."""
    return Worker(sessions, audit,
                  worker_id=f"{config.node_id}@{socket.gethostname()}:{os.getpid()}/{name}",
                  work_dir=work_dir_of(settings, config.node_id),
                  stage=make_stage(config, settings, policy, sessions),
                  environments=lambda: installed_environments(settings), **worker_options)


class NodeWorkers:
    """`count` worker threads of this node process; `start()` and `stop()` them."""

    def __init__(self, config: NodeConfig, settings: Settings, policy: PolicyService,
                 sessions: sessionmaker[Session], audit: AuditLog, count: int, *,
                 idle_seconds: float = 1.0, **worker_options) -> None:
        self.stop_event = threading.Event()
        self.idle_seconds = idle_seconds
        self.workers = [make_worker(config, settings, policy, sessions, audit, str(i),
                                    **worker_options)
                        for i in range(count)]
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for worker in self.workers:
            thread = threading.Thread(target=worker.run_forever, args=(self.stop_event,),
                                      kwargs={"idle_seconds": self.idle_seconds},
                                      name=f"job-{worker.worker_id}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loops to stop; a job still running is left to its heartbeat going stale
        (another worker takes it again, or it ends failed)."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout)
        self.threads.clear()
