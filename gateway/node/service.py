"""Node operations that own their transaction: a sync with its audit entry."""

from __future__ import annotations

from gateway.node.app import NODE_AUDIT
from gateway.node.config import SourceSpecError, open_dicom_source, open_fhir_source
from gateway.node.sources.base import SourceError
from gateway.node.sync import StageProgress, SyncReport, sync_index
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade


class NodeSyncError(Exception):
    """The sync could not run at all (bad source spec, store unreachable)."""


def run_sync(
    database_url: str,
    *,
    dicom: str,
    fhir: str,
    actor: str = "system",
    progress: StageProgress | None = None,
    cellkey_secret: bytes | None = None,
) -> SyncReport:
    """Migrate the node database, rebuild its index and audit the sync, all or nothing.
    `cellkey_secret` (perturb.node_secret) sets the patients' record keys."""
    try:
        dicom_source = open_dicom_source(dicom)
        fhir_source = open_fhir_source(fhir)
    except SourceSpecError as exc:
        raise NodeSyncError(str(exc)) from exc
    if dicom_source is None and fhir_source is None:
        raise NodeSyncError("no source to sync: give a DICOM and/or a FHIR source")
    upgrade(database_url, "node")
    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            try:
                report = sync_index(session, dicom=dicom_source, fhir=fhir_source,
                                    progress=progress, cellkey_secret=cellkey_secret)
            except SourceError as exc:
                raise NodeSyncError(f"a source could not be read: {exc}") from exc
            NODE_AUDIT.record(
                session, actor=actor, action="node.sync", object=f"{dicom} {fhir}".strip(),
                decision="info",
                reason=f"indexed {report.patients} patients, {report.studies} studies, "
                       f"{report.series} series; skipped {report.skipped}",
                details={k: v for k, v in report.to_dict().items() if k != "skipped_examples"},
            )
    finally:
        engine.dispose()
    return report
