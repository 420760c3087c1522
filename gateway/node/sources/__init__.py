"""The stores a node reads: DICOM (folder, DIMSE, DICOMweb) and FHIR (NDJSON, Bundles).

Every source implements one protocol of `base` (`DicomSource` or `FhirSource`); the sync
reads them through it only. Errors of the store (connection refused, HTTP error, missing
folder) are raised as `SourceError`; malformed items are yielded as `Skipped`.
"""

from gateway.node.sources.base import (
    DicomSource,
    FhirItem,
    FhirSource,
    Progress,
    SeriesRecord,
    Skipped,
    SourceError,
    StudyRecord,
)
from gateway.node.sources.dicomweb import DicomWebSource
from gateway.node.sources.dimse import DimseSource
from gateway.node.sources.fhir_bundle import FhirBundleSource
from gateway.node.sources.fhir_ndjson import FhirNdjsonSource
from gateway.node.sources.fhir_validate import InvalidResource, validate
from gateway.node.sources.folder import DicomFolderSource

__all__ = [
    "DicomFolderSource",
    "DicomSource",
    "DicomWebSource",
    "DimseSource",
    "FhirBundleSource",
    "FhirItem",
    "FhirNdjsonSource",
    "FhirSource",
    "InvalidResource",
    "Progress",
    "SeriesRecord",
    "Skipped",
    "SourceError",
    "StudyRecord",
    "validate",
]
