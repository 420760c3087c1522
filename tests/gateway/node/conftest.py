"""Node test fixtures: the DICOM test set of `dicom_set.py`, written once per module."""

from __future__ import annotations

import pytest

from tests.gateway.node.dicom_set import DicomSet, make_dicom_set


@pytest.fixture(scope="module")
def dicom_set(tmp_path_factory: pytest.TempPathFactory) -> DicomSet:
    return make_dicom_set(tmp_path_factory.mktemp("dicom"))
