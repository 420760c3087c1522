"""A worker pulls jobs from the node database and runs them in the sandbox.

Workers share nothing but the database: an institution starts more of them (threads,
processes or machines) to run more jobs. Each claimed job goes staging (the injected
`stage(job)` prepares its extract) -> running (code unpacked, `spe.sandbox.run`, with a
heartbeat thread keeping `heartbeat_at` fresh) -> a final state with the sandbox result
and the airlock's automatic report. Outputs stay in `<work_dir>/<job id>/output` for
review. A worker that dies mid-job stops its heartbeat; `requeue_stale` (run periodically
by every `run_forever`) then queues the job again or fails it ("worker lost").

No HTTP here: the hub side talks to the node, the node's database talks to the workers.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.node.jobs import repository as repo
from gateway.node.jobs.models import FAILED, SUCCEEDED, TIMED_OUT, NodeJob, unpack_code
from spe.airlock import ExtractTerms, OutputRules, cached_terms, check_outputs
from spe.airlock.scan import WITHHELD, withhold_lines
from spe.audit import AuditLog
from spe.db import session_scope
from spe.private_files import make_private
from spe.sandbox import Limits, SandboxError, SandboxResult, run
from spe.sandbox.cgroup import reap_orphans

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 8000
_SANDBOX_STATES = {"succeeded": SUCCEEDED, "failed": FAILED, "timed_out": TIMED_OUT,
                   "killed": FAILED}


def _whole_lines(text: str, total_bytes: int) -> str:
    """A stream's tail without its first, cut line (half an id would pass the scan)."""
    if total_bytes > len(text.encode()) and "\n" in text:
        return "[earlier output not kept]\n" + text.split("\n", 1)[1]
    return text


def researcher_log(sandbox: SandboxResult, terms: ExtractTerms | None) -> str:
    """The end of the job's stdout and stderr as its researcher may read it, unreviewed:
    whole lines, and every line naming an id or exact date of the extract withheld (the
    whole log if the extract's terms could not be read)."""
    text = _whole_lines(sandbox.stdout_tail, sandbox.stdout_bytes)
    if sandbox.stderr_tail:
        text += "\n--- stderr ---\n" + _whole_lines(sandbox.stderr_tail, sandbox.stderr_bytes)
    if len(text) > LOG_TAIL_CHARS:
        text = _whole_lines(text[-LOG_TAIL_CHARS:], len(text.encode()))
    if terms is None:
        return "[log withheld: the extract's identifiers could not be read to check it]"
    return withhold_lines(text, terms)[0]


def _verdicts(report: dict[str, Any] | None, limit: int = 50) -> dict[str, Any]:
    """For the audit: what the airlock said about each output, and why, in short."""
    if not report:
        return {}
    out: dict[str, Any] = {f.get("path", ""): ": ".join(
        [f.get("verdict", ""), "; ".join(f.get("reasons") or [])[:300]]).rstrip(": ")
        for f in (report.get("files") or [])[:limit]}
    if report.get("reasons"):
        out["(all outputs)"] = "; ".join(report["reasons"])[:300]
    return out


class _Heartbeat(threading.Thread):
    """Refresh the job's heartbeat until stopped; notes when the job is no longer ours."""

    def __init__(self, worker: Worker, job_id: str) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.worker, self.job_id = worker, job_id
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.worker.heartbeat_seconds):
            try:
                with session_scope(self.worker.sessions) as session:
                    if not repo.heartbeat(session, self.job_id, self.worker.worker_id):
                        self.lost.set()
                        return
            except Exception:  # a busy database: try again at the next beat
                log.exception("heartbeat of job %s failed", self.job_id)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


class Worker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        audit: AuditLog,
        *,
        worker_id: str,
        work_dir: Path | str,
        stage: Callable[[NodeJob], Path],
        rules: OutputRules | None = None,
        heartbeat_seconds: float = 2.0,
        stale_after: float = 10.0,
        python: str | None = None,
    ) -> None:
        if stale_after <= heartbeat_seconds:
            raise ValueError("stale_after must be longer than heartbeat_seconds")
        self.sessions = sessions
        self.audit = audit
        self.worker_id = worker_id
        self.work_dir = Path(work_dir)
        self.stage = stage
        self.rules = rules or OutputRules()
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after = stale_after
        self.python = python

    @property
    def actor(self) -> str:
        return f"worker:{self.worker_id}"

    def job_dir(self, job_id: str) -> Path:
        return self.work_dir / job_id

    # --- one job ---------------------------------------------------------------------

    def run_once(self) -> bool:
        """Claim the oldest queued job and run it to a final state; False if none queued."""
        return self.run_job(None)

    def run_job(self, job_id: str | None) -> bool:
        """Claim the job `job_id` (None: the oldest queued) and run it to a final state;
        False when it is not queued (taken by another worker, cancelled, finished)."""
        with session_scope(self.sessions) as session:
            job = repo.claim(session, self.worker_id, job_id=job_id)
            if job is None:
                return False
            self.audit.record(session, actor=self.actor, action="job.claim",
                              object=f"job:{job.id}", decision="allow",
                              details={"pid": job.pid, "user": job.user_id,
                                       "attempt": job.attempts, "worker": self.worker_id})
            session.expunge(job)
        beat = _Heartbeat(self, job.id)
        beat.start()
        try:
            state, result, log_tail, reason = self._execute(job, beat)
        except Exception as exc:  # anything unexpected still ends the job, never leaves it
            log.exception("job %s failed in the worker", job.id)
            state, result, log_tail, reason = FAILED, None, "", f"worker error: {exc}"
        finally:
            beat.stop()
        self._finish(job, state, result, log_tail, reason)
        return True

    def _execute(self, job: NodeJob, beat: _Heartbeat
                 ) -> tuple[str, dict[str, Any] | None, str, str]:
        try:
            extract = Path(self.stage(job))
        except Exception as exc:
            return FAILED, None, "", f"staging failed: {exc}"
        with session_scope(self.sessions) as session:
            if not repo.mark_running(session, job.id, self.worker_id):
                return FAILED, None, "", "the job was taken from this worker while staging"
            self.audit.record(session, actor=self.actor, action="job.run",
                              object=f"job:{job.id}", decision="info",
                              details={"pid": job.pid, "attempt": job.attempts})
        root = self.job_dir(job.id)
        if root.exists():  # an earlier attempt's leftovers
            shutil.rmtree(root)
        code, output = root / "code", root / "output"
        output.mkdir(parents=True)
        try:
            unpack_code(job.code, code)
        except ValueError as exc:
            return FAILED, None, "", f"bad job code: {exc}"
        try:
            limits = Limits(**job.limits)
            # The heartbeat sets `lost` when the job is no longer this worker's (requeued,
            # or cancelled because its permit was revoked): the sandbox is killed then.
            sandbox = run(code, job.entry, extract, output, limits, python=self.python,
                          cancel=beat.lost)
        except SandboxError as exc:
            return FAILED, None, "", f"the sandbox could not start the job: {exc}"
        try:  # the job may have opened up what it wrote (chmod 0666): the node's only
            make_private(output)
        except OSError:
            log.exception("job %s: its outputs could not be made private", job.id)
            return FAILED, None, "", "the job's outputs could not be made private"
        try:  # what of the extract must not leave (ids, pseudonyms, UIDs, exact dates)
            terms = cached_terms(extract)
        except Exception as exc:
            log.exception("job %s: the extract's terms could not be read", job.id)
            terms, unreadable = None, f"the extract's identifiers could not be read: {exc}"
        else:
            unreadable = ""
        report = check_outputs(output, rules=self.rules, extract_terms=terms)
        if unreadable:  # without them nothing is known to be safe: fail closed
            report.block(unreadable)
            report.finish()
        state = _SANDBOX_STATES[sandbox.state]
        result = {"sandbox": sandbox.to_dict(), "airlock": report.model_dump(mode="json"),
                  "verdict": report.verdict}
        tail = researcher_log(sandbox, terms)
        result["log_withheld_lines"] = tail.count(WITHHELD)
        result["sandbox"].pop("stdout_tail", None)  # the log the researcher reads is `tail`
        result["sandbox"].pop("stderr_tail", None)
        reason = ""
        if sandbox.state == "killed":
            reason = f"killed: {sandbox.limit or 'signal ' + str(sandbox.signal)}"
        elif state == TIMED_OUT:
            reason = "wall-clock limit"
        elif state == FAILED:
            reason = f"exit code {sandbox.exit_code}" + (
                f" at the {sandbox.limit} limit" if sandbox.limit else "")
        if beat.lost.is_set():
            reason = (reason + "; " if reason else "") + "the job was taken from this worker"
        return state, result, tail, reason

    def _finish(self, job: NodeJob, state: str, result: dict[str, Any] | None,
                log_tail: str, reason: str) -> None:
        verdict = (result or {}).get("verdict")
        with session_scope(self.sessions) as session:
            held = repo.finish(session, job.id, self.worker_id, state, result=result,
                               log_tail=log_tail, reason=reason)
            self.audit.record(
                session, actor=self.actor, action="job.finish", object=f"job:{job.id}",
                decision="info" if held else "error",
                reason=reason if held else "the job was no longer held by this worker",
                details={"pid": job.pid, "state": state, "verdict": verdict,
                         "attempt": job.attempts, "recorded": held,
                         "limit": ((result or {}).get("sandbox") or {}).get("limit"),
                         "outputs": _verdicts((result or {}).get("airlock"))})

    # --- the loop ----------------------------------------------------------------------

    def requeue_stale(self) -> list[repo.StaleJob]:
        """Queue again (or fail) jobs whose worker stopped beating, and kill what is left
        on this machine of sandboxes whose worker process died."""
        try:
            reap_orphans()
        except OSError:
            log.exception("reaping orphaned sandboxes failed")
        with session_scope(self.sessions) as session:
            stale = repo.requeue_stale(session, stale_after=timedelta(seconds=self.stale_after))
            for job in stale:
                self.audit.record(
                    session, actor=self.actor,
                    action="job.requeue" if job.state == "queued" else "job.lost",
                    object=f"job:{job.id}", decision="info", reason=repo.WORKER_LOST,
                    details={"lost_worker": job.worker, "attempts": job.attempts,
                             "state": job.state})
        return stale

    def run_forever(self, stop: threading.Event, *, idle_seconds: float = 1.0) -> None:
        """Run jobs until `stop` is set, requeueing stale ones every half `stale_after`."""
        last_sweep = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() - last_sweep >= self.stale_after / 2:
                    self.requeue_stale()
                    last_sweep = time.monotonic()
                if self.run_once():
                    continue
            except Exception:
                log.exception("worker %s: loop error", self.worker_id)
            stop.wait(idle_seconds)
