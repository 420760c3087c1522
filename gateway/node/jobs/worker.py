"""A worker pulls jobs from the node database and runs them in the sandbox.

Workers share nothing but the database: an institution starts more of them (threads,
processes or machines) to run more jobs. Each claimed job goes staging (the injected
`stage(job)` prepares its extract) -> running (code unpacked, `spe.sandbox.run`, with a
heartbeat thread keeping `heartbeat_at` fresh) -> a final state with the sandbox result
and the airlock's automatic report. Outputs stay in `<work_dir>/<job id>/output` for
review, with the end of what the job printed as one of them (`spe.wire.jobs.LOG_NAME`).
The job's record holds the runner's words for the researcher (`reason`); exit codes,
signals and staging errors go to the node's audit only. A worker that dies mid-job
stops its heartbeat; `requeue_stale` (run periodically by every `run_forever`) queues
the job again or fails it ("worker lost").

No HTTP here: the hub side talks to the node, the node's database talks to the workers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from gateway.node.jobs import repository as repo
from gateway.node.jobs.models import NodeJob
from gateway.node.jobs.staging_errors import RiskRefused
from spe.airlock import NO_VERDICT, OutputRules, cached_terms, check_outputs
from spe.audit import AuditLog
from spe.db import session_scope
from spe.private_files import make_private
from spe.sandbox import Limits, SandboxError, SandboxResult, run
from spe.sandbox.cgroup import reap_orphans
from spe.sandbox.environments import DEFAULT as DEFAULT_ENVIRONMENT
from spe.sandbox.environments import installed as installed_environments
from spe.settings import get_settings
from spe.wire.code_archive import unpack_code
from spe.wire.jobs import (
    BAD_CODE,
    EXITED_WITH_ERROR,
    FAILED,
    LIMIT_REASONS,
    LOG_NAME,
    NO_SANDBOX,
    NODE_ERROR,
    RISK_REFUSED,
    STAGING_FAILED,
    SUCCEEDED,
    TAKEN,
    TIMED_OUT,
    staging_percent,
)

log = logging.getLogger(__name__)

_SANDBOX_STATES = {"succeeded": SUCCEEDED, "failed": FAILED, "timed_out": TIMED_OUT,
                   "killed": FAILED}
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _whole_lines(text: str, total_bytes: int) -> str:
    """A stream's tail without its first, cut line (half an id would pass the scan)."""
    if total_bytes > len(text.encode()) and "\n" in text:
        return "[earlier output not kept]\n" + text.split("\n", 1)[1]
    return text


def write_log(output: Path, sandbox: SandboxResult) -> None:
    """The end of the job's stdout and stderr as one of its outputs (`LOG_NAME`), for the
    airlock like the rest. Written even when empty: every job that ran sends one, so
    whether it printed is no signal of its own. Runs after the sandbox has ended: whatever
    the job left at that name (a file, a folder, a link) is removed first, and the log is
    created without following a link."""
    text = _whole_lines(sandbox.stdout_tail, sandbox.stdout_bytes)
    if sandbox.stderr_tail:
        text += "\n--- stderr ---\n" + _whole_lines(sandbox.stderr_tail, sandbox.stderr_bytes)
    target = output / LOG_NAME
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(mode):
            shutil.rmtree(target)
        else:
            target.unlink()
    fd = os.open(target, _FILE_FLAGS, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as out:
        out.write(text)


def runner_reason(sandbox: SandboxResult) -> str:
    """What the researcher is told of how the job ended, in the runner's words only: a
    limit the runner itself saw hit (not one guessed from the job's stderr, which the job
    writes), else that it exited with an error. No exit code, no signal."""
    if sandbox.state == "succeeded":
        return ""
    if sandbox.limit_source != "stderr" and sandbox.limit in LIMIT_REASONS:
        return LIMIT_REASONS[sandbox.limit]
    return EXITED_WITH_ERROR


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


class StagingProgress:
    """Staging's progress callback (jobs/staging.py: step, done, total) as log lines of
    the job: each step's start and end, and in between at most one line every
    `every` seconds, so a long retrieval from a PACS shows it moves. With `path`, also
    the whole staging's percent (`spe.wire.jobs.StagingProgress`, no counts) written
    there at most every `write_every` seconds, which the node's job status reads."""

    def __init__(self, job: NodeJob, *, every: float = 10.0, path: Path | None = None,
                 write_every: float = 1.0) -> None:
        self.fields = {"job": job.id, "permit": job.pid,
                       "attempt": getattr(job, "attempts", None)}
        self.every = every
        self.path = path
        self.write_every = write_every
        self._last: dict[str, float] = {}
        self._written: tuple[str, int] | None = None
        self._written_at = 0.0

    def __call__(self, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        first, last = step not in self._last, done >= total
        if self.path is not None:
            self._write(step, staging_percent(step, done, total), now, first or last)
        if not (first or last or now - self._last[step] >= self.every):
            return
        self._last[step] = now
        log.info("job %s: staging %s %d/%d", self.fields["job"], step, done, total,
                 extra={**self.fields, "event": "staging.progress", "step": step,
                        "done": done, "total": total})

    def _write(self, step: str, percent: int, now: float, force: bool) -> None:
        if self._written == (step, percent) or not (
                force or now - self._written_at >= self.write_every):
            return
        assert self.path is not None
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps({"step": step, "percent": percent}))
            os.replace(tmp, self.path)
        except OSError:  # progress is a courtesy: staging goes on without it
            log.warning("job %s: staging progress not written", self.fields["job"])
            return
        self._written, self._written_at = (step, percent), now


def _tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under `root`, links not followed."""
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
    return files, size


class _Outcome(NamedTuple):
    state: str
    result: dict[str, Any] | None
    reason: str  # for the researcher: the runner's words (spe.wire.jobs)
    detail: str  # for the node's audit only: what the researcher must not read unreviewed


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
        environments: Callable[[], Mapping[str, str]] | None = None,
        metrics: Any = None,
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
        # The default environment's interpreter (None: the settings'), and the analysis
        # environments built here, name -> interpreter, looked up when a job runs (None:
        # the settings' SPE_ANALYSIS_ENVIRONMENTS; spe.sandbox.environments).
        self.python = python
        self.environments = environments or (lambda: installed_environments(get_settings()))
        # spe.observability.ServiceMetrics (jobs by state, staging throughput), or None.
        self.metrics = metrics

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
        started = time.monotonic()
        # Job lines name the job, its permit and attempt, states and the runner's words:
        # never what staging or the job said (it may name a patient or a file).
        log.info("job %s started (attempt %d)", job.id, job.attempts,
                 extra=self._fields(job, event="job.start"))
        beat = _Heartbeat(self, job.id)
        beat.start()
        try:
            outcome = self._execute(job, beat)
        except Exception as exc:  # anything unexpected still ends the job, never leaves it
            log.exception("job %s failed in the worker", job.id,
                          extra=self._fields(job, event="job.error"))
            outcome = _Outcome(FAILED, None, NODE_ERROR, f"worker error: {exc}")
        finally:
            beat.stop()
        self._finish(job, outcome)
        seconds = time.monotonic() - started
        ended = self._fields(job, event="job.end", state=outcome.state,
                             duration_ms=round(seconds * 1000), reason=outcome.reason or None,
                             verdict=(outcome.result or {}).get("verdict") or NO_VERDICT)
        if outcome.state == SUCCEEDED:
            log.info("job %s ended: %s", job.id, outcome.state, extra=ended)
        else:
            log.warning("job %s ended: %s (%s)", job.id, outcome.state,
                        outcome.reason or "no reason given", extra=ended)
        if self.metrics is not None:
            self.metrics.job_ended(outcome.state, seconds)
        return True

    def _fields(self, job: NodeJob, **more: Any) -> dict[str, Any]:
        return {"job": job.id, "permit": job.pid, "attempt": job.attempts,
                "worker": self.worker_id, **more}

    def _stage(self, job: NodeJob) -> Path:
        """Stage the job's extract, with a line before and after (files, bytes, seconds)."""
        log.info("job %s: staging its extract", job.id,
                 extra=self._fields(job, event="staging.start"))
        started = time.monotonic()
        try:
            extract = Path(self.stage(job))
        except Exception as exc:
            log.warning("job %s: staging failed (%s)", job.id, type(exc).__name__,
                        extra=self._fields(job, event="staging.failed",
                                           error=type(exc).__name__))
            raise
        seconds = time.monotonic() - started
        files, size = _tree_size(extract)
        log.info("job %s: staged %d files, %d bytes in %.1f s", job.id, files, size, seconds,
                 extra=self._fields(job, event="staging.end", files=files, bytes=size,
                                    duration_ms=round(seconds * 1000),
                                    files_per_second=round(files / seconds, 1)
                                    if seconds > 0 else None))
        if self.metrics is not None:
            self.metrics.staged(files, size, seconds)
        return extract

    def python_for(self, job: NodeJob) -> str | None:
        """The interpreter of the job's analysis environment, None if not built here
        (removed since the policy allowed it: the job fails, never runs in another)."""
        name = job.environment or DEFAULT_ENVIRONMENT
        if name == DEFAULT_ENVIRONMENT and self.python:
            return self.python
        return self.environments().get(name)

    def _execute(self, job: NodeJob, beat: _Heartbeat) -> _Outcome:
        python = self.python_for(job)
        if python is None:  # before staging: no extract is made for a job that cannot run
            return _Outcome(FAILED, None, NO_SANDBOX, f"analysis environment "
                            f"{job.environment!r} is not installed at this node")
        try:
            extract = self._stage(job)
        except Exception as exc:
            # What staging says may name a file, a patient or a count: the operator reads
            # it in the audit; the researcher gets the runner's words.
            return _Outcome(FAILED, None,
                            RISK_REFUSED if isinstance(exc, RiskRefused) else STAGING_FAILED,
                            f"staging failed: {exc}")
        with session_scope(self.sessions) as session:
            if not repo.mark_running(session, job.id, self.worker_id):
                return _Outcome(FAILED, None, TAKEN, "taken from this worker while staging")
            self.audit.record(session, actor=self.actor, action="job.run",
                              object=f"job:{job.id}", decision="info",
                              details={"pid": job.pid, "attempt": job.attempts,
                                       "environment": job.environment})
        root = self.job_dir(job.id)
        if root.exists():  # an earlier attempt's leftovers
            shutil.rmtree(root)
        code, output = root / "code", root / "output"
        output.mkdir(parents=True)
        try:
            unpack_code(job.code, code)
        except ValueError as exc:
            return _Outcome(FAILED, None, BAD_CODE, str(exc))
        try:
            limits = Limits(**job.limits)
            # The heartbeat sets `lost` when the job is no longer this worker's (requeued,
            # or cancelled because its permit was revoked): the sandbox is killed then.
            sandbox = run(code, job.entry, extract, output, limits, python=python,
                          cancel=beat.lost)
        except SandboxError as exc:
            return _Outcome(FAILED, None, NO_SANDBOX, str(exc))
        try:  # the job may have opened up what it wrote (chmod 0666): the node's only
            make_private(output)
        except OSError:
            log.exception("job %s: its outputs could not be made private", job.id)
            return _Outcome(FAILED, None, NODE_ERROR,
                            "the job's outputs could not be made private")
        # The log is an output like any other: checked here and in the central airlock,
        # reviewed with the rest, and read by the researcher only once released.
        write_log(output, sandbox)
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
        # The verdict shown (the job's end in the logs, the audit) is of what leaves: a
        # part that did not succeed sends its log alone, so it has no outputs and no
        # verdict ("none", not the "pass" of an empty set); each file's is in "airlock".
        result = {"sandbox": sandbox.to_dict(), "airlock": report.model_dump(mode="json"),
                  "verdict": report.shown_verdict() if state == SUCCEEDED else NO_VERDICT,
                  "log": LOG_NAME}
        # The node's record keeps no copy of what the job printed: that is in the log file.
        result["sandbox"].pop("stdout_tail", None)
        result["sandbox"].pop("stderr_tail", None)
        reason = runner_reason(sandbox)
        detail = ", ".join(f"{k} {v}" for k, v in (
            ("exit code", sandbox.exit_code), ("signal", sandbox.signal),
            ("limit", sandbox.limit), ("known from", sandbox.limit_source)) if v is not None)
        if beat.lost.is_set():
            reason = (reason + "; " if reason else "") + TAKEN
        return _Outcome(state, result, reason, detail)

    def _finish(self, job: NodeJob, outcome: _Outcome) -> None:
        state, result, reason, detail = outcome
        verdict = (result or {}).get("verdict") or NO_VERDICT  # never ran: none
        with session_scope(self.sessions) as session:
            held = repo.finish(session, job.id, self.worker_id, state, result=result,
                               reason=reason)
            self.audit.record(
                session, actor=self.actor, action="job.finish", object=f"job:{job.id}",
                decision="info" if held else "error",
                reason=reason if held else "the job was no longer held by this worker",
                details={"pid": job.pid, "state": state, "verdict": verdict,
                         "attempt": job.attempts, "recorded": held, "detail": detail,
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
