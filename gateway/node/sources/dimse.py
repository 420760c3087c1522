"""A PACS reached over DICOM networking (DIMSE) as a `DicomSource`, with pynetdicom.

Listing uses the Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2): one
C-FIND at STUDY level, then one at SERIES level per study, all on one association.
Retrieving uses Study Root - GET (PS3.4 C.6.2, C-GET in PS3.7 9.1.3): the instances come
back as C-STORE sub-operations on the same association, for which this AE takes the
Storage SCP role through SCP/SCU Role Selection Negotiation (PS3.7 D.3.3.4).

Jobs' staging retrieves into memory instead, by C-GET or C-MOVE to the node's own Storage
SCP (`instances`, `stream`: sources/dimse_retrieve.py).

Every failure of the peer (connection refused, association rejected or aborted, no answer,
a failed query) is raised as `SourceError` from the underlying error.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as FIND_MODEL,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet as GET_MODEL,
)

from gateway.node.sources import dicom_values as dv
from gateway.node.sources.base import Progress, Skipped, SourceError, StudyRecord
from gateway.node.sources.dimse_wire import (
    PENDING,
    storage_contexts,
)
from gateway.node.sources.dimse_wire import no_delay as _no_delay
from gateway.node.sources.dimse_wire import pause_reactor as _pause_reactor
from gateway.node.sources.dimse_wire import status_of as _status
from gateway.node.sources.dimse_wire import why_no_answer as _why

_SAFE_UID = re.compile(r"[0-9][0-9.]{0,63}")


class DimseError(ConnectionError):
    """What went wrong on the association; the cause of the `SourceError` raised."""


class DimseSource:
    """Studies from a DICOM Query/Retrieve SCP (Orthanc, a PACS), header level only.

    The attributes come from the SCP's database, so they are what it returns at STUDY and
    SERIES level. `Manufacturer` is not a Study Root series-level key (PS3.4 C.6.2.1.2); it
    is requested anyway as an optional key - Orthanc returns it, since it keeps it as a
    series main tag - and left None by SCPs that do not. The instance count is
    NumberOfSeriesRelatedInstances (PS3.4 C.3.4), which Orthanc computes.
    """

    def __init__(self, host: str, port: int, called_aet: str, calling_aet: str = "SPE-NODE",
                 name: str = "dimse", *, timeout: float = 30.0,
                 connect_timeout: float = 10.0, retrieve_mode: str = "auto",
                 listen: tuple[str, int] = ("0.0.0.0", 11112)) -> None:
        self.host = host
        self.port = int(port)
        self.called_aet = called_aet
        self.calling_aet = calling_aet
        self.name = name
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        # Staging's retrieve (sources/dimse_retrieve.py): C-GET, C-MOVE, or C-GET first;
        # a C-MOVE goes to this node's AE title, whose Storage SCP listens on `listen`.
        self.retrieve_mode = retrieve_mode
        self.store_aet = calling_aet
        self.retrieved_by: str | None = None  # "C-GET" or "C-MOVE", once one has worked
        self.receiver: Any = None  # the Storage SCP of C-MOVE while a staging runs
        self.listen = (listen[0], int(listen[1]))

    def __repr__(self) -> str:
        return (f"DimseSource({self.host!r}, {self.port}, {self.called_aet!r}, "
                f"calling_aet={self.calling_aet!r}, name={self.name!r})")

    @property
    def _peer(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"

    # -------------------------------------------------------------- association

    def _connection_error(self, assoc: Any) -> DimseError | OSError:
        """Why an association was not established, as an exception to chain from."""
        if assoc.is_rejected:
            rj = assoc.acceptor.primitive
            if rj is not None and getattr(rj, "result", None) in (0x01, 0x02):
                return DimseError(f"association rejected by {self._peer}: {rj.result_str}, "
                                  f"{rj.source_str}: {rj.reason_str}")
            return DimseError(f"association rejected by {self._peer}")
        if getattr(assoc.acceptor, "primitive", None) is None:
            # pynetdicom only logs a failed TCP connect; connect once more for the OSError.
            try:
                with socket.create_connection((self.host, self.port),
                                              timeout=self.connect_timeout):
                    pass
            except OSError as exc:
                return exc
            return DimseError(f"no answer from {self._peer} to the association request "
                              f"within {self.timeout:.0f} s")
        if not assoc.accepted_contexts:
            return DimseError(f"{self._peer} accepted none of the presentation contexts")
        return DimseError(f"association with {self._peer} aborted")

    def _open(self, contexts: list[PresentationContext], roles: list[Any] | None = None,
              handlers: list[Any] | None = None) -> Any:
        """An established association, or `SourceError` from the reason there is none."""
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.connect_timeout
        try:
            assoc = ae.associate(self.host, self.port, contexts=contexts,
                                 ae_title=self.called_aet, ext_neg=roles or None,
                                 evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay), *(handlers or [])])
        except (OSError, ValueError, RuntimeError) as exc:
            raise SourceError(f"cannot associate with {self._peer}: {exc}") from exc
        if not assoc.is_established:
            cause = self._connection_error(assoc)
            message = str(cause) if isinstance(cause, DimseError) else (
                f"cannot connect to {self._peer}: {cause}")
            raise SourceError(message) from cause
        return assoc

    @contextmanager
    def _associate(self, contexts: list[PresentationContext], roles: list[Any] | None = None,
                   handlers: list[Any] | None = None) -> Iterator[Any]:
        assoc = self._open(contexts, roles, handlers)
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _find(self, assoc: Any, query: Dataset) -> list[Dataset]:
        """All matches of one C-FIND (PS3.4 C.4.1); any failure status raises."""
        level = query.QueryRetrieveLevel
        matches: list[Dataset] = []
        _pause_reactor(assoc)
        for status, identifier in assoc.send_c_find(query, FIND_MODEL):
            code = _status(status)
            if code in PENDING:
                if identifier is not None:
                    matches.append(identifier)
                continue
            if code == 0x0000:
                return matches
            if code is None:
                cause = DimseError(f"no C-FIND response from {self._peer}: {_why(assoc)}")
            else:
                comment = status.get("ErrorComment", "")
                cause = DimseError(f"C-FIND at {level} level failed on {self._peer}: "
                                   f"status 0x{code:04X} {comment}".rstrip())
            raise SourceError(str(cause)) from cause
        cause = DimseError(f"C-FIND at {level} level on {self._peer} ended without a status")
        raise SourceError(str(cause)) from cause

    # -------------------------------------------------------------- listing

    @staticmethod
    def _query(level: str, **keys: str) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        return ds

    def studies(self, progress: Progress | None = None) -> Iterator[StudyRecord | Skipped]:
        """Every study with its series, sorted by Study and Series Instance UID."""
        study_keys = dict.fromkeys(dv.STUDY_TAGS, "")
        series_keys = dict.fromkeys(dv.SERIES_TAGS, "")
        assoc: Any = None

        def find(query: Dataset) -> list[Dataset]:
            # One association for the listing; a new one only if the first was closed while
            # the caller worked on a study for longer than the peer's or our idle timeout.
            nonlocal assoc
            if assoc is None or not assoc.is_established:
                assoc = self._open([build_context(FIND_MODEL)])
            return self._find(assoc, query)

        try:
            found: dict[str, Dataset] = {}
            for match in find(self._query("STUDY", **study_keys)):
                uid = dv.text(match.get("StudyInstanceUID"))
                if uid:
                    found.setdefault(uid, match)
                else:
                    yield Skipped(f"{self.name}:study", "C-FIND match without StudyInstanceUID")
            for uid in sorted(found):
                series = []
                for match in find(self._query("SERIES", StudyInstanceUID=uid, **series_keys)):
                    attrs = dv.from_dataset(match, dv.SERIES_TAGS)
                    if not dv.text(attrs.get("SeriesInstanceUID")):
                        yield Skipped(f"{self.name}:{uid}",
                                      "C-FIND match without SeriesInstanceUID")
                        continue
                    series.append(dv.series_record(attrs))
                if progress:
                    progress(1)
                yield dv.study_record(dv.from_dataset(found[uid], dv.STUDY_TAGS),
                                      tuple(series))
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()

    # -------------------------------------------------------------- retrieve

    def _sop_classes(self, study_uid: str) -> list[str] | None:
        """The SOP classes of a study's instances, None if the study is not there.

        SOPClassesInStudy (an optional STUDY level key, PS3.4 C.6.2.1.1) when the SCP
        returns it, else SOPClassUID of the IMAGE level matches; [] if neither answers.
        """
        with self._associate([build_context(FIND_MODEL)]) as assoc:
            query = self._query("STUDY", StudyInstanceUID=study_uid, SOPClassesInStudy="")
            matches = self._find(assoc, query)
            if not matches:
                return None
            classes = matches[0].get("SOPClassesInStudy")
            if classes:
                values = [classes] if isinstance(classes, str) else list(classes)
                return sorted({str(c) for c in values if str(c).strip()})
            query = self._query("IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID="",
                                SOPInstanceUID="", SOPClassUID="")
            return sorted({str(m.SOPClassUID) for m in self._find(assoc, query)
                           if m.get("SOPClassUID")})

    def retrieve(self, study_uid: str, dest: Path) -> list[Path]:
        """C-GET the study into `dest` as `<SOPInstanceUID>.dcm`, as sent; [] if unknown.

        Raises `SourceError` if the peer reports failed sub-operations (some files may
        then have been written).
        """
        dest = Path(dest)
        sop_classes = self._sop_classes(study_uid)
        if sop_classes is None:
            return []
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SourceError(f"cannot write to {dest}: {exc}") from exc
        written: list[Path] = []

        def on_store(event: Any) -> int:
            sop_uid = str(event.request.AffectedSOPInstanceUID)
            name = sop_uid if _SAFE_UID.fullmatch(sop_uid) else f"instance-{len(written)}"
            path = dest / f"{name}.dcm"
            try:
                path.write_bytes(event.encoded_dataset())
            except OSError:
                return 0xA700  # Refused: out of resources (PS3.4 B.2.3)
            written.append(path)
            return 0x0000

        contexts = storage_contexts(sop_classes)
        roles = [build_role(uid, scp_role=True)
                 for uid in dict.fromkeys(str(cx.abstract_syntax) for cx in contexts)]
        query = self._query("STUDY", StudyInstanceUID=study_uid)
        with self._associate([build_context(GET_MODEL), *contexts], roles,
                             [(evt.EVT_C_STORE, on_store)]) as assoc:
            final: Dataset | None = None
            _pause_reactor(assoc)
            for status, _identifier in assoc.send_c_get(query, GET_MODEL):
                if _status(status) not in PENDING:
                    final = status
            code = _status(final) if final is not None else None
            if code != 0x0000:
                if code is None:
                    detail = f"no final C-GET response: {_why(assoc)}"
                else:
                    failed = final.get("NumberOfFailedSubOperations", "?")
                    detail = f"C-GET status 0x{code:04X}, {failed} sub-operations failed"
                cause = DimseError(f"retrieving study {study_uid} from {self._peer}: {detail}")
                raise SourceError(str(cause)) from cause
        return written

    # -------------------------------------------------------------- staging

    def instances(self, study_uid: str) -> dict[str, str] | None:
        """The study's instances (SOP Instance UID -> SOP Class UID) by C-FIND, None if the
        PACS does not have the study."""
        from gateway.node.sources.dimse_retrieve import list_instances

        return list_instances(self, study_uid)

    def stream(self, study_uid: str, sink: Any, instances: dict[str, str]) -> int:
        """Hand each instance of the study to `sink(part10_bytes, sop_uid)` in memory, by
        C-GET or C-MOVE as `retrieve_mode` says (sources/dimse_retrieve.py)."""
        from gateway.node.sources.dimse_retrieve import stream_study

        return stream_study(self, study_uid, sink, instances)

    def close(self) -> None:
        """Stop the Storage SCP a C-MOVE started (staging calls this when it ends)."""
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.close()
