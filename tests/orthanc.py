"""A real Orthanc for tests: `with orthanc_server(tmp) as pacs: ...`.

Orthanc (Debian package `orthanc`, with `orthanc-dicomweb`) is started by the node's own
launcher, `gateway.node.orthanc_process.OrthancProcess`: free loopback ports, a config JSON
and the storage in a folder of the test's, the DICOMweb plugin at `/dicom-web/`, the calling
AE titles registered in `DicomModalities` (and C-FIND/C-GET/C-MOVE allowed), `StableAge` 1.
It is ready when its REST API answers, and stopped with terminate, wait, kill on timeout.
Orthanc runs with `TCP_NODELAY=1`, which makes DCMTK disable Nagle's algorithm: without it
every DIMSE request-response round trip waits for a delayed ACK (about 40 ms instead of 5).

Only a missing Orthanc binary skips the test; an Orthanc that does not start fails it, with
the end of its log.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.node.orthanc_process import (
    ORTHANC_BINARY,
    OrthancError,
    OrthancProcess,
    free_port,
    orthanc_available,
)

CALLING_AETS = ("SPE-NODE", "SPE-TEST")
"""AE titles registered as peers, so Orthanc accepts their queries and retrieves."""


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables for the child started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _log_tail(workdir: Path, lines: int = 30) -> str:
    log = workdir / "orthanc.log"
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def orthanc_server(workdir: Path | None = None, *, aet: str = "ORTHANC",
                   calling_aets: tuple[str, ...] = CALLING_AETS) -> Iterator[OrthancProcess]:
    """A running Orthanc, stopped on exit.

    The object has `.aet`, `.dicom_port`, `.http_url`, `.dicomweb_url`, `.upload(paths)`
    (POST /instances; returns how many it stored) and `.instance_count()`.
    """
    if not orthanc_available():
        pytest.skip(f"Orthanc is not installed ({ORTHANC_BINARY}; Debian package orthanc)")
    with tempfile.TemporaryDirectory(prefix="orthanc-") as tmp:
        where = Path(workdir) if workdir is not None else Path(tmp)
        # The peers' ports only matter for C-MOVE; C-GET answers on the association.
        server = OrthancProcess(where, aet=aet, peers={a: free_port() for a in calling_aets})
        try:
            with _env(TCP_NODELAY="1"):
                server.start()
        except OrthancError as exc:
            pytest.fail(f"Orthanc did not start: {exc}\n{_log_tail(where)}")
        try:
            yield server
        finally:
            server.stop()
