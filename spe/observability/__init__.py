"""Watching a running service: readiness, Prometheus metrics, structured logs that carry a
request id from the hub to the nodes, and waiting for the database at start.

Part of the shared core: it imports nothing from `catalogue` or `gateway`; the app
factories and the CLI wire it in, and hand it what only they know (a node's sources).
"""

from spe.observability.db_wait import DatabaseNeverCame, wait_for_database
from spe.observability.logging import configure_logging
from spe.observability.metrics import ServiceMetrics
from spe.observability.middleware import install_observability
from spe.observability.readiness import Check, CheckResult, Readiness
from spe.observability.request_id import (
    REQUEST_ID_HEADER,
    current_request_id,
    request_id_headers,
)

__all__ = [
    "REQUEST_ID_HEADER",
    "Check",
    "CheckResult",
    "DatabaseNeverCame",
    "Readiness",
    "ServiceMetrics",
    "configure_logging",
    "current_request_id",
    "install_observability",
    "request_id_headers",
    "wait_for_database",
]
