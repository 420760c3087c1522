"""How a node's queued jobs reach its workers.

- On SQLite (the embedded default) worker threads of the node process poll the job table
  (`Worker.run_forever`, started by runtime.NodeWorkers).
- On PostgreSQL the work is handed out by procrastinate, a PostgreSQL task queue: taking a
  job also defers a procrastinate task `spe.node.run_job(job_id)` on the queue
  `spe-node-jobs`, and procrastinate workers, in the node process (`SPE_NODE_WORKERS`) or on
  any other machine (`spe node worker`), are woken by LISTEN/NOTIFY and run it with
  `Worker.run_job`. The job table stays the record of each job's state (what the API
  shows, what survives a restart); procrastinate only decides who runs what.

Every process that runs workers also sweeps (`Sweeper`): jobs whose worker stopped beating
are queued again or failed (`Worker.requeue_stale`), and every queued job gets a task again
(a deferral lost between the commit and the defer, or a job queued again after its worker
died). `queueing_lock=<job id>` keeps that to one waiting task per job, and a task whose
job is no longer queued does nothing: claiming a job is atomic (repository.claim).
"""

from __future__ import annotations

import logging
import threading

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url

from gateway.node.jobs import repository as repo
from gateway.node.jobs.worker import Worker
from spe.db import session_scope

log = logging.getLogger(__name__)

QUEUE = "spe-node-jobs"
TASK = "spe.node.run_job"


def uses_task_queue(database_url: str) -> bool:
    """Whether this node's jobs go through procrastinate (a PostgreSQL database)."""
    return make_url(database_url).get_backend_name() == "postgresql"


def conninfo(database_url: str) -> str:
    """The libpq connection string of an SQLAlchemy URL (`postgresql+psycopg://...`)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def task_app(database_url: str, *, sync: bool = False) -> procrastinate.App:
    """A procrastinate app on the node's database with the one task; `sync` for deferring
    from threads (a pool of plain connections), else for running workers (asyncio)."""
    connector = (procrastinate.SyncPsycopgConnector if sync
                 else procrastinate.PsycopgConnector)(conninfo=conninfo(database_url))
    app = procrastinate.App(connector=connector)

    @app.task(name=TASK, queue=QUEUE, pass_context=True)
    def run_job(context: procrastinate.JobContext, job_id: str) -> str:
        worker: Worker = context.additional_context["worker"]
        return "ran" if worker.run_job(job_id) else "not queued (taken, cancelled or ended)"

    return app


class Dispatcher:
    """Defers node jobs to procrastinate; one per process, opened until `close()`."""

    def __init__(self, database_url: str) -> None:
        self.app = task_app(database_url, sync=True)
        self.app.open()

    def defer(self, job_id: str) -> bool:
        """One task for the job; False if one is already waiting."""
        try:
            self.app.configure_task(TASK, queueing_lock=job_id).defer(job_id=job_id)
        except AlreadyEnqueued:
            return False
        return True

    def close(self) -> None:
        self.app.close()


class Sweeper(threading.Thread):
    """Every `interval` seconds: requeue jobs of lost workers, re-defer queued jobs."""

    def __init__(self, worker: Worker, dispatcher: Dispatcher, interval: float) -> None:
        super().__init__(name="job-sweeper", daemon=True)
        self.worker, self.dispatcher, self.interval = worker, dispatcher, interval
        self.stopped = threading.Event()

    def sweep(self) -> int:
        self.worker.requeue_stale()
        with session_scope(self.worker.sessions) as session:
            queued = repo.queued_ids(session)
        return sum(self.dispatcher.defer(job_id) for job_id in queued)

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.sweep()
            except Exception:  # the database restarting: try again next round
                log.exception("job sweep failed")
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


async def run_task_workers(database_url: str, worker: Worker, concurrency: int) -> None:
    """procrastinate workers in this event loop until cancelled (each job in a thread)."""
    app = task_app(database_url)
    async with app.open_async():
        await app.run_worker_async(
            queues=[QUEUE], concurrency=concurrency, name=worker.worker_id,
            additional_context={"worker": worker}, install_signal_handlers=False,
            delete_jobs="successful")


def run_task_workers_blocking(database_url: str, worker: Worker, concurrency: int,
                              sweep_interval: float) -> None:
    """`spe node worker` on PostgreSQL: procrastinate workers and a sweeper until
    interrupted (Ctrl-C or SIGTERM: procrastinate finishes the running jobs first)."""
    dispatcher = Dispatcher(database_url)
    sweeper = Sweeper(worker, dispatcher, sweep_interval)
    sweeper.start()
    app = task_app(database_url)
    try:
        with app.open():
            app.run_worker(queues=[QUEUE], concurrency=concurrency, name=worker.worker_id,
                           additional_context={"worker": worker},
                           delete_jobs="successful")
    finally:
        sweeper.stop()
        dispatcher.close()


__all__ = ["QUEUE", "TASK", "Dispatcher", "Sweeper", "run_task_workers",
           "run_task_workers_blocking", "task_app", "uses_task_queue"]
