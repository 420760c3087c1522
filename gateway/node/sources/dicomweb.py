"""A DICOMweb server (Orthanc's plugin, a PACS) as a `DicomSource`, with dicomweb-client.

Listing uses QIDO-RS (PS3.18 10.6): Search for Studies, paged with `limit`/`offset` until a
page brings nothing new, then Search for Study's Series per study, with `includefield`
for the attributes the records need beyond the required return keys (PS3.18 10.6.3.3).
Retrieving uses WADO-RS Retrieve Study (PS3.18 10.4), asking for the instances in the
transfer syntax they are stored in, and writes them as DICOM Part-10 files (PS3.10).

HTTP errors, connection errors and unreadable answers are raised as `SourceError` from the
underlying `requests` error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from dicomweb_client import DICOMwebClient
from pydicom.errors import InvalidDicomError

from gateway.node.sources import dicom_values as dv
from gateway.node.sources.base import Progress, Skipped, SourceError, StudyRecord

PAGE_SIZE = 500
_STUDY_FIELDS = ["PatientSex", "PatientBirthDate", "StudyDescription"]
_SERIES_FIELDS = ["BodyPartExamined", "Manufacturer", "SeriesDescription",
                  "NumberOfSeriesRelatedInstances"]
# "*" asks for the stored transfer syntax (PS3.18 8.7.3.5.2), so nothing is transcoded.
_AS_STORED = (("application/dicom", "*"),)
_STUDY_UID = dv.STUDY_TAGS["StudyInstanceUID"]
_SERIES_UID = dv.SERIES_TAGS["SeriesInstanceUID"]
_SOP_UID, _SOP_CLASS = "00080018", "00080016"
_SAFE_UID = re.compile(r"[0-9][0-9.]{0,63}")


class DicomWebSource:
    """Studies from a DICOMweb service.

    `url` is the service root (Orthanc: `http://host:8042/dicom-web`). `session` may carry
    authentication (a `requests.Session`, which dicomweb-client uses); `headers` are added
    to every request (e.g. an `Authorization` header). A failed request (refused, 429, 503,
    ...) is tried `retries` more times before it becomes a `SourceError`.

    Every record attribute is filled from the server's answers; the instance count is
    NumberOfSeriesRelatedInstances (Orthanc computes it).
    """

    def __init__(self, url: str, name: str = "dicomweb", *,
                 session: requests.Session | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 30.0,
                 page_size: int = PAGE_SIZE, retries: int = 2) -> None:
        self.url = url.rstrip("/")
        self.name = name
        self.page_size = page_size
        self._client = DICOMwebClient(self.url, session=session, headers=headers,
                                      timeout=timeout)
        # dicomweb-client retries every failed request, a refused connection too, 5 times
        # with waits doubling from 2 s; keep it short: 0.4 s, 0.8 s, ...
        self._client.set_http_retry_params(retry=retries > 0, max_attempts=retries + 1,
                                           wait_exponential_multiplier=200)

    def __repr__(self) -> str:
        return f"DicomWebSource({self.url!r}, name={self.name!r})"

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise SourceError(f"{what} at {self.url} failed: HTTP {status}") from exc
        except (requests.RequestException, ValueError) as exc:
            raise SourceError(f"{what} at {self.url} failed: {exc}") from exc

    def _search(self, what: str, fn: Callable[..., list[dict[str, Any]]], uid_tag: str,
                **kwargs: Any) -> list[dict[str, Any]]:
        """All matches of a QIDO-RS search, page by page, keyed by UID (first wins)."""
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self._call(what, fn, offset=offset, limit=self.page_size, **kwargs)
            new = 0
            for item in page:
                uid = dv.from_json(item, {"uid": uid_tag}).get("uid")
                key = str(uid) if uid else "#" + json.dumps(item, sort_keys=True, default=str)
                if key not in found:
                    found[key] = item
                    new += 1
            # A short page is not the end: servers may cap `limit` below ours. An empty page
            # is; so is a page with nothing new (a server that ignores `offset`).
            if not page or not new:
                return [found[k] for k in sorted(found)]
            offset += len(page)

    def studies(self, progress: Progress | None = None) -> Iterator[StudyRecord | Skipped]:
        """Every study with its series, sorted by Study and Series Instance UID."""
        client = self._client
        for study in self._search("QIDO-RS search for studies", client.search_for_studies,
                                  _STUDY_UID, fields=_STUDY_FIELDS):
            attrs = dv.from_json(study, dv.STUDY_TAGS)
            uid = dv.text(attrs.get("StudyInstanceUID"))
            if not uid:
                yield Skipped(f"{self.name}:study", "QIDO-RS match without StudyInstanceUID")
                continue
            series = []
            for item in self._search(f"QIDO-RS search for series of {uid}",
                                     client.search_for_series, _SERIES_UID,
                                     study_instance_uid=uid, fields=_SERIES_FIELDS):
                series_attrs = dv.from_json(item, dv.SERIES_TAGS)
                if not dv.text(series_attrs.get("SeriesInstanceUID")):
                    yield Skipped(f"{self.name}:{uid}", "QIDO-RS match without SeriesInstanceUID")
                    continue
                series.append(dv.series_record(series_attrs))
            if progress:
                progress(1)
            yield dv.study_record(attrs, tuple(series))

    def retrieve(self, study_uid: str, dest: Path) -> list[Path]:
        """WADO-RS the study into `dest` as `<SOPInstanceUID>.dcm`; [] if unknown (404)."""
        dest = Path(dest)
        written: list[Path] = []
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for ds in self._client.iter_study(study_uid, media_types=_AS_STORED):
                sop_uid = str(ds.get("SOPInstanceUID", ""))
                name = sop_uid if _SAFE_UID.fullmatch(sop_uid) else f"instance-{len(written)}"
                path = dest / f"{name}.dcm"
                ds.save_as(path, enforce_file_format=True)
                written.append(path)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404 and not written:
                return []
            status = exc.response.status_code if exc.response is not None else "?"
            raise SourceError(f"WADO-RS retrieve of study {study_uid} at {self.url} failed: "
                              f"HTTP {status}") from exc
        except (requests.RequestException, ValueError, OSError, InvalidDicomError) as exc:
            raise SourceError(f"WADO-RS retrieve of study {study_uid} at {self.url} failed: "
                              f"{exc}") from exc
        return written

    # -------------------------------------------------------------- staging

    def instances(self, study_uid: str) -> dict[str, str] | None:
        """The study's instances (SOP Instance UID -> SOP Class UID) by QIDO-RS Search for
        Study's Instances (PS3.18 10.6), None if the server does not have the study."""
        try:
            found = self._search(f"QIDO-RS search for instances of {study_uid}",
                                 self._client.search_for_instances, _SOP_UID,
                                 study_instance_uid=study_uid)
        except SourceError as exc:
            cause = exc.__cause__
            if (isinstance(cause, requests.HTTPError) and cause.response is not None
                    and cause.response.status_code == 404):
                return None
            raise
        out = {}
        for item in found:
            attrs = dv.from_json(item, {"sop": _SOP_UID, "cls": _SOP_CLASS})
            if attrs.get("sop"):
                out[str(attrs["sop"])] = str(attrs.get("cls") or "")
        return out or None

    def stream(self, study_uid: str, sink: Callable[[Any, str], None],
               instances: dict[str, str] | None = None) -> int:
        """WADO-RS Retrieve Study (as stored), each instance handed to `sink(dataset,
        sop_uid)` as it is parsed from the response, never written to disk; how many came."""
        count = 0
        try:
            for ds in self._client.iter_study(study_uid, media_types=_AS_STORED):
                sink(ds, str(ds.get("SOPInstanceUID", "")))
                count += 1
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise SourceError(f"WADO-RS retrieve of study {study_uid} at {self.url} failed: "
                              f"HTTP {status}") from exc
        except (requests.RequestException, ValueError, InvalidDicomError) as exc:
            raise SourceError(f"WADO-RS retrieve of study {study_uid} at {self.url} failed: "
                              f"{exc}") from exc
        return count
