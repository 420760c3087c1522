"""The Orthanc the project starts (gateway/node/orthanc_process.py, as `spe demo --orthanc`
starts it) holds identified images: it answers the node's own AE title and nobody else.

Measured before: it answered a C-FIND for every patient's name from an AE title it had
never been told about. Here a stranger's C-FIND, C-ECHO and C-STORE are refused and return
no identifier, while the node's DIMSE source (calling as `SPE-NODE`) still lists every study;
its HTTP API asks for its password even from this machine.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from gateway.node.orthanc_process import NODE_AET, OrthancError, OrthancProcess
from gateway.node.sources import DimseSource
from tests.gateway.node.dicom_set import DicomSet
from tests.orthanc import require_orthanc

FIND_MODELS = (PatientRootQueryRetrieveInformationModelFind,
               StudyRootQueryRetrieveInformationModelFind)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, dicom_set: DicomSet) -> Iterator[OrthancProcess]:
    """The project's Orthanc with its own defaults (no peers named), holding the test set."""
    require_orthanc()
    server = OrthancProcess(tmp_path_factory.mktemp("orthanc"))
    try:
        server.start()
    except OrthancError as exc:
        pytest.fail(f"Orthanc did not start: {exc}")
    try:
        assert server.upload(dicom_set.files) == len(dicom_set.files)
        yield server
    finally:
        server.stop()


def _find_patients(pacs: OrthancProcess, calling_aet: str, called_aet: str | None = None,
                   address: str = "127.0.0.1") -> tuple[bool, list[Dataset], list[int]]:
    """(association accepted, identifiers returned, statuses) of a PATIENT-level C-FIND
    asking every patient's name and id."""
    ae = AE(ae_title=calling_aet)
    for model in FIND_MODELS:
        ae.add_requested_context(model)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientName = "*"
    query.PatientID = ""
    assoc = ae.associate(address, pacs.dicom_port, ae_title=called_aet or pacs.aet)
    if not assoc.is_established:
        return False, [], []
    identifiers, statuses = [], []
    try:
        for status, identifier in assoc.send_c_find(
                query, PatientRootQueryRetrieveInformationModelFind):
            if status is not None and "Status" in status:
                statuses.append(int(status.Status))
            if identifier is not None:
                identifiers.append(identifier)
    finally:
        assoc.release()
    return True, identifiers, statuses


def test_an_unknown_ae_title_gets_no_patient_from_c_find(pacs, dicom_set):
    accepted, identifiers, statuses = _find_patients(pacs, "INTRUDER")
    assert identifiers == []
    # Refused at association, or the C-FIND itself ends in a failure (never 0x0000/0xFF00).
    assert not accepted or all(s not in (0x0000, 0xFF00, 0xFF01) for s in statuses)


def test_the_nodes_ae_title_still_finds_every_patient(pacs, dicom_set):
    accepted, identifiers, statuses = _find_patients(pacs, NODE_AET)
    assert accepted
    wanted = {pydicom.dcmread(f, stop_before_pixels=True).PatientID for f in dicom_set.files}
    assert wanted  # the check below is not vacuous
    assert {str(i.PatientID) for i in identifiers} == wanted
    assert statuses[-1] == 0x0000


def test_the_node_calling_orthanc_by_another_title_is_refused(pacs):
    accepted, identifiers, _ = _find_patients(pacs, NODE_AET, called_aet="ANY-SCP")
    assert not accepted
    assert identifiers == []


def _outward_address() -> str | None:
    """This machine's address on its network (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_the_nodes_ae_title_from_another_address_is_refused(pacs):
    """Orthanc listens on every interface (no bind option in 1.10): a caller reaching it on
    the machine's network address, even with the node's AE title, gets nothing."""
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    socket.create_connection((address, pacs.dicom_port), timeout=10).close()  # it listens
    accepted, identifiers, statuses = _find_patients(pacs, NODE_AET, address=address)
    assert identifiers == []
    assert not accepted or all(s not in (0x0000, 0xFF00, 0xFF01) for s in statuses)


def test_http_from_another_address_is_refused_even_with_the_password(pacs):
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    resp = httpx.get(f"http://{address}:{pacs.http_port}/patients", auth=pacs.http_auth,
                     timeout=10)
    assert resp.status_code in (401, 403)
    assert "ID" not in resp.text


def test_an_unknown_ae_title_can_neither_echo_nor_store(pacs, dicom_set):
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(Verification)
    sample = pydicom.dcmread(dicom_set.files[0])
    ae.add_requested_context(sample.SOPClassUID, sample.file_meta.TransferSyntaxUID)
    before = pacs.instance_count()
    assoc = ae.associate("127.0.0.1", pacs.dicom_port, ae_title=pacs.aet)
    if assoc.is_established:
        try:
            echo = assoc.send_c_echo()
            sample.SOPInstanceUID = pydicom.uid.generate_uid()
            store = assoc.send_c_store(sample)
        finally:
            assoc.release()
        assert not (echo and echo.Status == 0x0000)
        assert not (store and store.Status == 0x0000)
    assert pacs.instance_count() == before


def test_the_nodes_dimse_source_lists_every_study(pacs, dicom_set):
    source = DimseSource("127.0.0.1", pacs.dicom_port, pacs.aet)  # calls as SPE-NODE
    studies = [s for s in source.studies() if hasattr(s, "study_uid")]
    assert {s.study_uid for s in studies} == set(dicom_set.studies)


def test_http_asks_for_the_password_even_on_loopback(pacs):
    for path in ("/patients", "/dicom-web/studies", "/instances"):
        assert httpx.get(f"{pacs.http_url}{path}", timeout=10).status_code == 401, path
    assert httpx.get(f"{pacs.http_url}/patients", timeout=10,
                     auth=("spe", "guessed")).status_code == 401
    patients = httpx.get(f"{pacs.http_url}/patients", auth=pacs.http_auth, timeout=10)
    assert patients.status_code == 200
    assert patients.json()  # the upload above went through with the password


def test_orthancs_own_files_are_its_users_only(pacs):
    written = [Path(pacs.workdir, "orthanc.json"), *Path(pacs.workdir, "storage").rglob("*")]
    assert written  # the upload above stored something
    for path in written:
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
