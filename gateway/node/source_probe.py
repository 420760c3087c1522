"""A node's readiness checks of its own: its sources answer (a folder is there, the PACS
answers a C-ECHO, the DICOMweb service answers), and its job queue's depth for the
metrics. Reasons name the setting, never a path or a URL (which may hold credentials)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlparse

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.node.config import NodeConfig, SourceSpecError, dimse_options
from gateway.node.jobs.models import NodeJob
from gateway.node.jobs.repository import QUEUED, RUNNING, STAGING
from spe.observability.readiness import Check, CheckResult

#: How long a probe waits for a PACS or a DICOMweb service.
PROBE_TIMEOUT = 3.0
#: The node's AE title when its spec names none (gateway/node/sources/dimse.py's default).
NODE_AET = "SPE-NODE"


def source_checks(config: NodeConfig) -> list[Check]:
    out: list[Check] = []
    if config.dicom:
        out.append(("dicom_source", _dicom(config.dicom)))
    if config.fhir:
        out.append(("fhir_source", _path_source(config.fhir, "SPE_NODE_FHIR")))
    return out


def _dicom(spec: str) -> Callable[[], CheckResult]:
    kind = spec.partition(":")[0]
    if kind == "dimse":
        return lambda: _c_echo(spec)
    if kind == "dicomweb":
        return lambda: _dicomweb(spec.partition(":")[2])
    return _path_source(spec, "SPE_NODE_DICOM")


def _path_source(spec: str, setting: str) -> Callable[[], CheckResult]:
    kind, _, rest = spec.partition(":")

    def check() -> CheckResult:
        path = Path(rest)
        if kind in ("folder", "ndjson") and path.is_dir():
            return CheckResult.ok()
        if kind == "bundle" and path.exists():
            return CheckResult.ok()
        if kind not in ("folder", "ndjson", "bundle"):
            return CheckResult.failed(f"{setting} names no known kind of source")
        return CheckResult.failed(f"the {kind} source of {setting} is missing or unreadable")

    return check


def _c_echo(spec: str) -> CheckResult:
    """DICOM Verification (PS3.4 Annex A, C-ECHO) with the PACS the node reads from."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    url = urlparse(spec)
    try:
        port = url.port
        calling = dimse_options(url.query, spec).get("calling_aet", NODE_AET)
    except (ValueError, SourceSpecError):
        port = calling = None
    if not (url.username and url.hostname and port and calling):
        return CheckResult.failed("SPE_NODE_DICOM is not dimse://AET@HOST:PORT[?aet=...]")
    ae = AE(ae_title=calling)  # the node's own AE title: the one the PACS knows
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = PROBE_TIMEOUT
    ae.connection_timeout = PROBE_TIMEOUT
    assoc = ae.associate(url.hostname, port, ae_title=url.username)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "does not answer"
        return CheckResult.failed(f"the PACS of SPE_NODE_DICOM {why} (C-ECHO)")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or getattr(status, "Status", None) != 0x0000:
        return CheckResult.failed("the PACS of SPE_NODE_DICOM refused a C-ECHO")
    return CheckResult.ok()


def _dicomweb(base: str) -> CheckResult:
    try:
        resp = httpx.get(base.rstrip("/") + "/studies", params={"limit": "1"},
                         timeout=PROBE_TIMEOUT, headers={"Accept": "application/dicom+json"})
    except httpx.HTTPError as exc:
        return CheckResult.failed(f"the DICOMweb service of SPE_NODE_DICOM does not answer "
                                  f"({type(exc).__name__})")
    if resp.status_code >= 400:
        return CheckResult.failed(f"the DICOMweb service of SPE_NODE_DICOM answers HTTP "
                                  f"{resp.status_code}")
    return CheckResult.ok()


def job_counts(sessions: sessionmaker[Session]
               ) -> Callable[[], Iterable[tuple[tuple[str, ...], float]]]:
    """The queue's depth at each scrape: jobs queued, staging and running."""

    def read() -> list[tuple[tuple[str, ...], float]]:
        with sessions() as session:
            rows = dict(session.execute(
                select(NodeJob.state, func.count()).where(
                    NodeJob.state.in_([QUEUED, STAGING, RUNNING])).group_by(NodeJob.state)
            ).all())
        return [((state,), float(rows.get(state, 0))) for state in (QUEUED, STAGING, RUNNING)]

    return read


def last_sync(sessions: sessionmaker[Session]) -> Callable[[], CheckResult]:
    """The node's index: when it was last synced and whether that sync skipped bad files or
    lines (`spe node sync` rebuilds it in one transaction, so a sync under way shows
    once it is done). Never synced is a warning: queries would find nothing."""
    import json

    from gateway.node.index.repository import last_sync_run

    def check() -> CheckResult:
        with sessions() as session:
            run = last_sync_run(session)
        if run is None or run.finished_at is None:
            return CheckResult.warn("never synced: run `spe node sync`")
        try:
            skipped = int(json.loads(run.report or "{}").get("skipped", 0))
        except (ValueError, TypeError, AttributeError):
            skipped = 0
        at = run.finished_at.strftime("%Y-%m-%d %H:%M UTC")
        # No counts in /ready (it is public): the sync's report has them.
        return CheckResult.ok(f"last synced {at}" + (
            "; it skipped bad files or lines (see `spe node sync`'s report)" if skipped else ""))

    return check
