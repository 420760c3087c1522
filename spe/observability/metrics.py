"""Prometheus metrics of one service (prometheus-client), in a registry of its own.

One registry per app, not the process-wide default: the tests run a centre and several
nodes in one process, and each /metrics must show its own service only. The job worker
process (`spe node worker`) has one too, served by prometheus-client's own HTTP server on
SPE_METRICS_PORT. Labels are bounded: route templates (never raw paths with ids), node
ids from the configuration, states and outcomes from fixed lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_JOB_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class _Collected(Collector):
    """A gauge read at scrape time (e.g. the job queue's depth from the database)."""

    def __init__(self, name: str, documentation: str, labels: list[str],
                 read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        self.name, self.documentation, self.labels, self.read = name, documentation, labels, read

    def collect(self):
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        try:
            for values, value in self.read():
                family.add_metric(list(values), value)
        except Exception:  # a database down at scrape time: the readiness gauge says so
            pass
        yield family


class ServiceMetrics:
    def __init__(self, service: str) -> None:
        self.service = service
        r = self.registry = CollectorRegistry()
        self.info = Gauge("spe_service_info", "The service this endpoint belongs to.",
                          ["service"], registry=r)
        self.info.labels(service).set(1)
        self.http_latency = Histogram(
            "spe_http_request_duration_seconds",
            "Requests by method, route template and status, with their latency.",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ready = Gauge("spe_ready", "1 when every readiness check holds, else 0.",
                           registry=r)
        self.check = Gauge("spe_ready_check",
                           "Each readiness check: 1 ok, 0.5 warning, 0 failed.",
                           ["check"], registry=r)
        self.federated = Counter(
            "spe_federated_query_node_results_total",
            "The hub's calls to nodes for federated queries, by node and outcome "
            "(answered, suppressed, refused, timed_out, unreachable, error).",
            ["node", "outcome"], registry=r)
        self.jobs = Counter("spe_jobs_total", "Jobs ended by this service's workers, by "
                            "final state.", ["state"], registry=r)
        self.job_seconds = Histogram("spe_job_duration_seconds",
                                     "Jobs from claim to final state.", ["state"],
                                     buckets=_JOB_BUCKETS, registry=r)
        self.staged_files = Counter("spe_staging_files_total",
                                    "Files of staged extracts.", registry=r)
        self.staged_bytes = Counter("spe_staging_bytes_total",
                                    "Bytes of staged extracts.", registry=r)
        self.staging_seconds = Counter(
            "spe_staging_seconds_total",
            "Time spent staging extracts (files / seconds: the throughput).", registry=r)
        self.audit_length = Gauge("spe_audit_chain_length",
                                  "Entries in the audit chain (its head's sequence number).",
                                  registry=r)
        self.audit_verified = Gauge("spe_audit_chain_verified_seq",
                                    "The last entry the running service verified.",
                                    registry=r)
        self.audit_broken = Gauge("spe_audit_chain_broken",
                                  "1 when the audit chain does not verify (an alarm).",
                                  registry=r)
        self.cert_days = Gauge("spe_certificate_days_left",
                               "Days until each certificate of the PKI folder expires.",
                               ["certificate"], registry=r)

    def collect_gauge(self, name: str, documentation: str, labels: list[str],
                      read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        """A gauge whose values `read()` gives at each scrape."""
        self.registry.register(_Collected(name, documentation, labels, read))

    def federated_result(self, node_id: str, outcome: str) -> None:
        self.federated.labels(node_id, outcome).inc()

    def job_ended(self, state: str, seconds: float) -> None:
        self.jobs.labels(state).inc()
        self.job_seconds.labels(state).observe(seconds)

    def staged(self, files: int, size: int, seconds: float) -> None:
        self.staged_files.inc(files)
        self.staged_bytes.inc(size)
        self.staging_seconds.inc(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
