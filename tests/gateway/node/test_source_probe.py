"""A node's readiness checks of its sources, against a real Orthanc (C-ECHO, QIDO-RS) and
folders; reasons name the setting, never a path or a URL."""

from __future__ import annotations

import socket

import pytest

from gateway.node.config import NodeConfig
from gateway.node.source_probe import source_checks


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _results(dicom: str = "", fhir: str = "") -> dict:
    checks = source_checks(NodeConfig("site-x", "site-x", "sqlite://", dicom=dicom, fhir=fhir))
    return {name: check() for name, check in checks}


@pytest.mark.orthanc
def test_a_pacs_and_a_dicomweb_service_that_answer_are_ready(orthanc):
    dimse = _results(f"dimse://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}")
    assert dimse["dicom_source"].status == "ok", dimse
    named = _results(f"dimse://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
                     "?aet=SPE-NODE&retrieve=move")
    assert named["dicom_source"].status == "ok", named
    web = _results(f"dicomweb:{orthanc.dicomweb_url}")
    assert web["dicom_source"].status == "ok", web


@pytest.mark.orthanc
def test_a_pacs_that_refuses_or_is_gone_is_not_ready(orthanc, tmp_path):
    cases = {
        "wrong called AE title": f"dimse://NOT-ORTHANC@127.0.0.1:{orthanc.dicom_port}",
        "nothing listening": f"dimse://ORTHANC@127.0.0.1:{_closed_port()}",
        "an AE title the PACS does not know":
            f"dimse://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}?aet=STRANGER",
        "options the node does not know": "dimse://ORTHANC@127.0.0.1:1?colour=blue",
        "DICOMweb gone": f"dicomweb:http://127.0.0.1:{_closed_port()}/dicom-web",
        "DICOMweb at a wrong path": f"dicomweb:{orthanc.http_url}/no-such-plugin",
        "folder missing": f"folder:{tmp_path / 'gone'}",
    }
    assert cases
    for case, spec in cases.items():
        result = _results(spec)["dicom_source"]
        assert result.status == "failed", case
        assert "SPE_NODE_DICOM" in result.reason, case
        assert str(tmp_path) not in result.reason
        assert "127.0.0.1" not in result.reason


def test_fhir_files_are_checked_for_presence(tmp_path):
    (tmp_path / "fhir").mkdir()
    assert _results(fhir=f"ndjson:{tmp_path / 'fhir'}")["fhir_source"].status == "ok"
    missing = _results(fhir=f"bundle:{tmp_path / 'nothing.json'}")["fhir_source"]
    assert missing.status == "failed"
    assert "SPE_NODE_FHIR" in missing.reason
