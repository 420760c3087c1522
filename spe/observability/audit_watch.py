"""The audit chain of a running service, verified as it grows.

Each check verifies the entries appended since the last one verified (not the whole
chain from its start every time), checks that the last verified entry still has the hash
it had, and re-verifies one window of older entries, so a row edited after it was checked
is found within (chain length / window) checks. A break is an alarm: an ERROR log line,
`spe_audit_chain_broken` 1 and /ready failing, until the service is restarted after the
operator has run `spe audit verify` (which names the entry) and dealt with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from spe.audit.service import GENESIS, AuditLog
from spe.observability.metrics import ServiceMetrics
from spe.observability.readiness import CheckResult

log = logging.getLogger("spe.audit")
#: Entries verified per check, for new ones and for the rolling re-verification each.
WINDOW = 5000


class AuditWatch:
    def __init__(self, audit: AuditLog, sessions: sessionmaker[Session], *,
                 metrics: ServiceMetrics | None = None,
                 other_alarm: Callable[[], str | None] = lambda: None,
                 window: int = WINDOW) -> None:
        self.audit, self.sessions, self.metrics = audit, sessions, metrics
        self.other_alarm = other_alarm  # the checkpointer's (spe/audit/schedule.py)
        self.window = window
        self.alarm: str | None = None
        self._verified: tuple[int, str] | None = None  # (seq, hash) checked up to
        self._sweep = 0  # where the next re-verification of older entries starts
        self._lock = threading.Lock()

    def check(self) -> CheckResult:
        with self._lock:
            if self.alarm is None:
                try:
                    self._advance()
                except SQLAlchemyError as exc:
                    return CheckResult.failed(f"the audit chain cannot be read "
                                              f"({type(exc).__name__}); see the database check")
            alarm = self.alarm or self.other_alarm()
        if self.metrics is not None:
            self.metrics.audit_broken.set(1 if alarm else 0)
        if alarm:
            return CheckResult.failed("the audit chain does not verify: run `spe audit "
                                      "verify` (the service's log names the entry)")
        return CheckResult.ok()

    def _advance(self) -> None:
        head_model, entry = self.audit.head_model, self.audit.entry_model
        with self.sessions() as session:
            head = session.execute(select(head_model).where(head_model.id == 1)
                                   ).scalar_one_or_none()
            if head is None:
                return  # nothing recorded yet
            base = (head.base_seq, head.base_hash)
            if self.metrics is not None:
                self.metrics.audit_length.set(head.last_seq)
            if self._verified is None or self._verified[0] < base[0]:
                self._verified = base  # first check, or pruned past it
            else:
                seq, digest = self._verified
                if seq > base[0]:
                    found = session.execute(select(entry.hash).where(entry.seq == seq)
                                            ).scalar_one_or_none()
                    if found != digest:
                        self._break(seq, "differs from the hash verified before "
                                         "(entry rewritten or deleted)")
                        return
            # The new entries, up to a window of them (the rest at the next checks).
            start = self._verified
            stop = min(head.last_seq, start[0] + self.window)
            if stop > start[0]:
                end = (stop, head.last_hash) if stop == head.last_seq else (
                    stop, self._hash_at(session, stop))
                report = self.audit.verify(session, start=start, end=end)
                if not report.ok:
                    self._break(report.breaks[0].seq, report.breaks[0].problem)
                    return
                self._verified = end
            # One window of what was verified before, from the base up, round and round.
            lo = max(self._sweep, base[0])
            hi = min(lo + self.window, self._verified[0])
            if hi > lo:
                lo_hash = base[1] if lo == base[0] else self._hash_at(session, lo)
                report = self.audit.verify(session, start=(lo, lo_hash),
                                           end=(hi, self._hash_at(session, hi)))
                if not report.ok:
                    self._break(report.breaks[0].seq, report.breaks[0].problem)
                    return
            self._sweep = hi if hi < self._verified[0] else base[0]
            if self.metrics is not None:
                self.metrics.audit_verified.set(self._verified[0])

    def _hash_at(self, session: Session, seq: int) -> str:
        entry = self.audit.entry_model
        return session.execute(select(entry.hash).where(entry.seq == seq)
                               ).scalar_one_or_none() or GENESIS

    def _break(self, seq: int, problem: str) -> None:
        self.alarm = f"entry {seq}: {problem}"
        log.error("AUDIT CHAIN BROKEN at entry %s: %s; /ready fails until it is resolved "
                  "(run `spe audit verify`)", seq, problem,
                  extra={"alarm": "audit_chain_broken", "entry": seq})
