"""What every long-running command (`spe serve`, `spe node worker`) does first: its log
format, then waiting for its database (one line per attempt, exit 2 with one line if it
never comes: no traceback)."""

from __future__ import annotations

import logging

import typer

from spe.observability import DatabaseNeverCame, configure_logging, wait_for_database
from spe.settings import Settings


def start_service(settings: Settings, database_url: str | None = None) -> None:
    """The log format, then (with `database_url`) the database waited for."""
    configure_logging(settings.resolved_log_format, settings.log_level)
    if database_url is not None:
        wait_for_database_or_exit(settings, database_url)


def wait_for_database_or_exit(settings: Settings, database_url: str) -> None:
    try:
        wait_for_database(database_url, settings.db_wait_seconds)
    except DatabaseNeverCame as exc:
        logging.getLogger("spe.startup").error("%s; giving up (SPE_DB_WAIT_SECONDS)", exc)
        raise typer.Exit(2) from None


def serve_metrics(settings: Settings, registry) -> None:
    """A process without a web app of its own (the job worker) serves its metrics with
    prometheus-client's HTTP server on SPE_METRICS_PORT (0: not at all). No token there:
    bind it to loopback or to an interface only the scraper reaches (SPE_METRICS_ADDRESS)."""
    if not settings.metrics_port:
        return
    from prometheus_client import start_http_server

    start_http_server(settings.metrics_port, addr=settings.metrics_address, registry=registry)
    logging.getLogger("spe.startup").info(
        "metrics on http://%s:%d/metrics", settings.metrics_address, settings.metrics_port)
