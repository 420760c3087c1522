"""Gateway fixtures: one real Orthanc for the whole session (see `tests/orthanc.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.node.orthanc_process import OrthancProcess
from tests.orthanc import orthanc_server


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    """A running Orthanc shared by the session's tests.

    Skipped if Orthanc or its DICOMweb plugin (Debian packages orthanc orthanc-dicomweb) is
    not installed, failed instead when `CI` is set to a true value (see `tests/orthanc.py`).

    Tests upload their own files and look only at their own UIDs, since others may have
    uploaded theirs to the same server.
    """
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
