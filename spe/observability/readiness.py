"""/ready: whether this service can do its work now, check by check.

Each check answers ok, warn (ready, but an operator should act: a certificate expiring
soon) or failed (not ready: 503), with a reason an operator can act on and nobody can
misuse: no tokens, paths, record counts or tracebacks (those go to the log). The answer
is kept for SPE_READY_CACHE_SECONDS, so probes and scrapers polling it cost one round of
checks per period whatever their number. A check that raises counts as failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from spe.observability.metrics import ServiceMetrics

log = logging.getLogger("spe.ready")

Status = Literal["ok", "warn", "failed"]
_GAUGE = {"ok": 1.0, "warn": 0.5, "failed": 0.0}


@dataclass(frozen=True)
class CheckResult:
    status: Status
    reason: str = ""

    @classmethod
    def ok(cls, reason: str = "") -> CheckResult:
        return cls("ok", reason)

    @classmethod
    def warn(cls, reason: str) -> CheckResult:
        return cls("warn", reason)

    @classmethod
    def failed(cls, reason: str) -> CheckResult:
        return cls("failed", reason)


#: (name, the check): a name per thing an operator fixes (database, identity_provider...).
Check = tuple[str, Callable[[], CheckResult]]


@dataclass
class Report:
    results: dict[str, CheckResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results.values())

    def as_json(self, service: str, name: str) -> dict:
        return {"status": "ready" if self.ok else "not ready", "service": service,
                "name": name,
                "checks": {k: {"status": r.status, **({"reason": r.reason} if r.reason else {})}
                           for k, r in self.results.items()}}


class Readiness:
    def __init__(self, checks: list[Check], metrics: ServiceMetrics | None = None, *,
                 cache_seconds: float = 5.0,
                 alarm: Callable[[], bool] = lambda: False) -> None:
        self.checks = list(checks)
        # An alarm raised elsewhere (the audit checkpointer's): a cached "ready" is not
        # kept past it.
        self.alarm = alarm
        self.metrics = metrics
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._last: Report | None = None
        self._at = 0.0

    def add(self, name: str, check: Callable[[], CheckResult]) -> None:
        self.checks.append((name, check))
        self._last = None

    def report(self) -> Report:
        with self._lock:  # one round at a time; callers meanwhile wait for its answer
            if (self._last is not None and time.monotonic() - self._at < self.cache_seconds
                    and not (self._last.ok and self.alarm())):
                return self._last
            previous = self._last
            report = Report({name: self._run(name, check) for name, check in self.checks})
            self._last, self._at = report, time.monotonic()
        self._note(previous, report)
        return report

    @staticmethod
    def _run(name: str, check: Callable[[], CheckResult]) -> CheckResult:
        try:
            return check()
        except Exception as exc:  # a check that breaks says the service is not known ready
            log.exception("readiness check %s raised", name, extra={"check": name})
            return CheckResult.failed(f"the check itself failed ({type(exc).__name__}); "
                                      "see the service's log")

    def _note(self, previous: Report | None, report: Report) -> None:
        if self.metrics is not None:
            self.metrics.ready.set(1 if report.ok else 0)
            for name, result in report.results.items():
                self.metrics.check.labels(name).set(_GAUGE[result.status])
        for name, result in report.results.items():  # a line when a check changes state
            before = previous.results.get(name) if previous else None
            if before is not None and before.status == result.status:
                continue
            if result.status == "ok" and before is None:
                continue
            level = {"ok": logging.INFO, "warn": logging.WARNING,
                     "failed": logging.ERROR}[result.status]
            log.log(level, "readiness check %s: %s%s", name, result.status,
                    f" ({result.reason})" if result.reason else "",
                    extra={"check": name, "check_status": result.status})
