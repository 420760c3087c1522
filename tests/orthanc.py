"""A real Orthanc for tests: `with orthanc_server(tmp) as pacs: ...`.

Orthanc (Debian package `orthanc`, with `orthanc-dicomweb`) is started by the node's own
launcher, `gateway.node.orthanc_process.OrthancProcess`: free loopback ports, a config JSON
and the storage in a folder of the test's, the DICOMweb plugin at `/dicom-web/`, the calling
AE titles registered in `DicomModalities` (C-ECHO, C-FIND and C-GET allowed, from 127.0.0.1
only; nothing else answered), `StableAge` 1.
It is ready when its REST API answers, and stopped with terminate, wait, kill on timeout.
The launcher runs Orthanc with `TCP_NODELAY=1`, which makes DCMTK disable Nagle's algorithm:
without it every DIMSE request-response round trip waits for a delayed ACK (about 40 ms
instead of 5).

A missing Orthanc binary or DICOMweb plugin skips the test, or fails it when `CI` is set to
a true value (`CI=true`, as CI runners set it); an Orthanc that does not start fails it,
with the end of its log.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.node.orthanc_process import (
    DICOMWEB_PLUGIN,
    ORTHANC_BINARY,
    OrthancError,
    OrthancProcess,
    free_port,
    orthanc_available,
)

CALLING_AETS = ("SPE-NODE", "SPE-TEST")
"""AE titles registered as peers, so Orthanc accepts their queries and retrieves."""


def in_ci() -> bool:
    """Whether `CI` is set to a true value: missing Orthanc is then a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def require_orthanc() -> None:
    """Skip the test when Orthanc or its DICOMweb plugin is not installed; fail in CI."""
    missing = []
    if not orthanc_available():
        missing.append(f"Orthanc ({ORTHANC_BINARY})")
    if not Path(DICOMWEB_PLUGIN).exists():
        missing.append(f"the Orthanc DICOMweb plugin ({DICOMWEB_PLUGIN})")
    if not missing:
        return
    what = " and ".join(missing)
    if in_ci():
        pytest.fail(f"{what} not installed, but required in CI (CI={os.environ['CI']!r}): "
                    "install the Debian packages orthanc orthanc-dicomweb", pytrace=False)
    pytest.skip(f"{what} not installed (Debian packages orthanc orthanc-dicomweb)")


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
    require_orthanc()
    with tempfile.TemporaryDirectory(prefix="orthanc-") as tmp:
        where = Path(workdir) if workdir is not None else Path(tmp)
        # Orthanc's modality entries need a port; C-GET answers on the association.
        # No HTTP password: the node's DICOMweb source (`dicomweb:URL`) carries no
        # credentials. The project's own launcher sets one (tests/gateway/node/
        # test_orthanc_access.py checks it).
        server = OrthancProcess(where, aet=aet, peers={a: free_port() for a in calling_aets},
                                http_password=None)
        try:
            server.start()
        except OrthancError as exc:
            pytest.fail(f"Orthanc did not start: {exc}\n{_log_tail(where)}")
        try:
            yield server
        finally:
            server.stop()
