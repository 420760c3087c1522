"""One institution node's configuration, and opening its sources from their specs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

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
    # Whether this institution vets a job's code first (policies/jobs `code_review`):
    # "none" | "approval" | "registry"; "" leaves it to the policy's default.
    code_review: str = ""
    # The registry of approved analyses: the SHA-256s of code archives that may run here
    # when code_review is "registry".
    code_registry: tuple[str, ...] = ()


def code_registry(text: str) -> tuple[str, ...]:
    """SPE_NODE_CODE_REGISTRY's SHA-256s (comma-separated), lower case, each once."""
    hashes = [h.strip().lower() for h in text.split(",") if h.strip()]
    bad = [h for h in hashes if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)]
    if bad:
        raise ValueError(f"not SHA-256s in the code registry: {', '.join(bad[:3])}")
    return tuple(dict.fromkeys(hashes))


def open_dicom_source(spec: str) -> DicomSource | None:
    from gateway.node.sources import DicomFolderSource, DicomWebSource, DimseSource

    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "folder":
        return DicomFolderSource(Path(rest))
    if kind == "dimse":
        url = urlparse(spec)
        try:
            port = url.port
        except ValueError:
            port = None
        if not (url.username and url.hostname and port):
            raise SourceSpecError(f"DIMSE source must look like dimse://AET@HOST:PORT, got {spec}")
        return DimseSource(url.hostname, port, called_aet=url.username,
                           **dimse_options(url.query, spec))
    if kind == "dicomweb":
        return DicomWebSource(rest)
    raise SourceSpecError(f"unknown DICOM source {spec!r}: use folder:, dimse:// or dicomweb:")


DIMSE_OPTIONS = {"aet", "retrieve", "listen"}
DEFAULT_LISTEN = ("0.0.0.0", 11112)


def dimse_options(query: str, spec: str) -> dict[str, Any]:
    """The options after `?` in `dimse://PACS@HOST:PORT?aet=SPE-NODE&retrieve=auto&
    listen=0.0.0.0:11112`: the node's own AE title (it calls the PACS with it and is the
    C-MOVE destination the PACS must know), how staging retrieves (`get`, `move`, or `auto`:
    C-GET, C-MOVE when the PACS refuses C-GET) and where the node's Storage SCP listens
    during a C-MOVE (the PACS sends to the host and port it has for that AE title)."""
    from gateway.node.sources.dimse_retrieve import MODES

    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise SourceSpecError(f"DIMSE source options are not NAME=VALUE&...: {spec}") from None
    options = dict(pairs)
    unknown = sorted(set(options) - DIMSE_OPTIONS)
    if unknown or len(options) != len(pairs):
        raise SourceSpecError(f"DIMSE source options are {', '.join(sorted(DIMSE_OPTIONS))}, "
                              f"each once; got {query!r} in {spec}")
    out: dict[str, Any] = {}
    if "aet" in options:
        aet = options["aet"]
        if not (0 < len(aet) <= 16 and aet.isascii() and aet.isprintable()
                and "\\" not in aet and aet.strip() == aet):
            raise SourceSpecError(f"aet={aet!r} is no AE title (1-16 printable ASCII "
                                  f"characters, no backslash): {spec}")
        out["calling_aet"] = aet
    if "retrieve" in options:
        if options["retrieve"] not in MODES:
            raise SourceSpecError(f"retrieve= must be one of {', '.join(MODES)}: {spec}")
        out["retrieve_mode"] = options["retrieve"]
    listen = DEFAULT_LISTEN
    if "listen" in options:
        host, sep, port_text = options["listen"].rpartition(":")
        host = host.strip("[]")
        if not (sep and host and port_text.isdigit() and 0 < int(port_text) < 65536):
            raise SourceSpecError(f"listen= must be HOST:PORT (e.g. 0.0.0.0:11112): {spec}")
        listen = (host, int(port_text))
    out["listen"] = listen
    return out


def source_identity(spec: str) -> str:
    """The spec without the DIMSE options: which store it is, not how it is read, so an
    extract staged by any of the node's processes (each with its own AE title) is reused."""
    return spec.partition("?")[0] if spec.startswith("dimse:") else spec


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
