"""One institution node's configuration, and opening its sources from their specs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from gateway.node.sources.base import DicomSource, FhirSource


class SourceSpecError(ValueError):
    """A source spec that does not name a known kind of store."""


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    name: str
    database_url: str
    dicom: str = ""  # folder:PATH | dimse://AET@HOST:PORT | dicomweb:URL
    fhir: str = ""  # ndjson:PATH | bundle:PATH


def open_dicom_source(spec: str) -> DicomSource | None:
    from gateway.node.sources import DicomFolderSource, DicomWebSource, DimseSource

    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "folder":
        return DicomFolderSource(Path(rest))
    if kind == "dimse":
        url = urlparse(spec)
        if not (url.username and url.hostname and url.port):
            raise SourceSpecError(f"DIMSE source must look like dimse://AET@HOST:PORT, got {spec}")
        return DimseSource(url.hostname, url.port, called_aet=url.username)
    if kind == "dicomweb":
        return DicomWebSource(rest)
    raise SourceSpecError(f"unknown DICOM source {spec!r}: use folder:, dimse:// or dicomweb:")


def open_fhir_source(spec: str) -> FhirSource | None:
    from gateway.node.sources import FhirBundleSource, FhirNdjsonSource

    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "ndjson":
        return FhirNdjsonSource(Path(rest))
    if kind == "bundle":
        return FhirBundleSource(Path(rest))
    raise SourceSpecError(f"unknown FHIR source {spec!r}: use ndjson: or bundle:")
