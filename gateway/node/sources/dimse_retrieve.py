"""Retrieving a study from a PACS over DIMSE into memory: C-GET, C-MOVE, or C-GET first.

`stream_study(source, study_uid, sink)` hands every instance of the study to `sink` as the
Part-10 bytes the node received (`pynetdicom` `Event.encoded_dataset()`), never writing
them to disk (pynetdicom's default; its option to spool received datasets to temporary
files is refused); the caller de-identifies them there and then.

- C-GET (Study Root - GET, PS3.4 C.4.3): the instances come back as C-STORE
  sub-operations on the node's own association (SCP/SCU Role Selection, PS3.7 D.3.3.4).
- C-MOVE (Study Root - MOVE, PS3.4 C.4.2): the PACS opens an association of its own to
  the *move destination*, an AE title it knows with a host and port configured at the
  PACS. For the length of the move the node runs a Storage SCP (PS3.4 B.2.2) under that
  AE title on `listen` (host, port). It accepts C-STORE only from the PACS's AE title,
  only instances of the study being moved that a C-FIND just listed (each once): a
  stranger who reaches the port cannot put an object into an extract.
- auto: C-GET, and C-MOVE when the PACS refuses C-GET (no GET presentation context, the
  association aborted or a failure status before any instance came). Which one worked is
  remembered for the source's later studies.

One Storage SCP per listen address in a process, for one staging at a time (a lock,
`Receiver`): the PACS names no move in its sub-operations, so two moves into one Storage
SCP could not be told apart. `DimseSource.close()` stops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_context, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as FIND_MODEL,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet as GET_MODEL,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelMove as MOVE_MODEL,
)

from gateway.node.sources.base import SourceError
from gateway.node.sources.dimse_wire import (
    COMPRESSED,
    UNCOMPRESSED,
    storage_contexts,
)
from gateway.node.sources.dimse_wire import no_delay as _no_delay
from gateway.node.sources.dimse_wire import pause_reactor as _pause_reactor
from gateway.node.sources.dimse_wire import why_no_answer as _why

if TYPE_CHECKING:
    from gateway.node.sources.dimse import DimseSource

MODES = ("auto", "get", "move")
Sink = Callable[[bytes, str], None]
"""Called with (Part-10 bytes of one instance, its SOP Instance UID)."""

# C-GET / C-MOVE statuses (PS3.4 C.4.2.1.5 and C.4.3.1.5, Table C.4-2 and C.4-3).
STATUSES = {
    0x0000: "success",
    0xA701: "refused: out of resources, unable to calculate the number of matches",
    0xA702: "refused: out of resources, unable to perform sub-operations",
    0xA801: "refused: move destination unknown",
    0xA900: "error: identifier does not match SOP class",
    0xB000: "warning: sub-operations complete, one or more failures or warnings",
    0xFE00: "cancelled",
}
_MOVE_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()

OK, REFUSED_RESOURCES, REFUSED_UNEXPECTED = 0x0000, 0xA700, 0xC000  # C-STORE (PS3.4 B.2.3)


class RetrieveRefused(SourceError):
    """The PACS refused the retrieve itself (not one instance): the cause of a fallback."""


def status_text(code: int | None) -> str:
    if code is None:
        return "no status"
    if code in STATUSES:
        return f"0x{code:04X} ({STATUSES[code]})"
    if 0xC000 <= code <= 0xCFFF:
        return f"0x{code:04X} (failed: unable to process)"
    return f"0x{code:04X}"


@dataclass
class Expected:
    """The instances a C-FIND listed for the study: SOP Instance UID -> SOP Class UID."""

    instances: dict[str, str]
    received: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, sop_uid: str) -> bool:
        """Whether this instance is one of the study's, not yet received (then it is)."""
        with self.lock:
            if sop_uid not in self.instances or sop_uid in self.received:
                return False
            self.received.add(sop_uid)
            return True


def list_instances(source: DimseSource, study_uid: str) -> dict[str, str] | None:
    """The study's instances (SOP Instance UID -> SOP Class UID) by an IMAGE level C-FIND
    (PS3.4 C.6.2.1.2), None when the PACS has no such study."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    query.SOPClassUID = ""
    with source._associate([build_context(FIND_MODEL)]) as assoc:
        matches = source._find(assoc, query)
    found = {str(m.SOPInstanceUID): str(m.get("SOPClassUID", "")) for m in matches
             if m.get("SOPInstanceUID")}
    return found or None


def _on_store(expected: Expected, sink: Sink, errors: list[str]) -> Callable[[Any], int]:
    def handler(event: Any) -> int:
        # A handler never lets an exception end the association: each becomes a status.
        try:
            sop_uid = str(event.request.AffectedSOPInstanceUID)
            if not expected.claim(sop_uid):
                return REFUSED_UNEXPECTED
            sink(event.encoded_dataset(), sop_uid)
            return OK
        except Exception as exc:  # noqa: BLE001 - the sink's failure, reported once
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return REFUSED_RESOURCES
    return handler


def _final(responses: Any) -> Dataset | None:
    final = None
    for status, _identifier in responses:
        code = int(status.Status) if "Status" in status else None
        if code not in (0xFF00, 0xFF01):
            final = status if code is not None else None
    return final


def _summary(final: Dataset | None) -> str:
    if final is None:
        return "no final status"
    code = int(final.Status)
    failed = final.get("NumberOfFailedSubOperations", "?")
    comment = str(final.get("ErrorComment", "")).strip()
    return (f"status {status_text(code)}, {failed} sub-operations failed"
            + (f", {comment}" if comment else ""))


def c_get(source: DimseSource, study_uid: str, expected: Expected, sink: Sink) -> None:
    """Retrieve the study by C-GET on the node's own association."""
    classes = sorted({c for c in expected.instances.values() if c})
    contexts = storage_contexts(classes)
    roles = [build_role(uid, scp_role=True)
             for uid in dict.fromkeys(str(cx.abstract_syntax) for cx in contexts)]
    errors: list[str] = []
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    with source._associate([build_context(GET_MODEL), *contexts], roles,
                           [(evt.EVT_C_STORE, _on_store(expected, sink, errors))]) as assoc:
        if not any(str(cx.abstract_syntax) == GET_MODEL for cx in assoc.accepted_contexts):
            raise RetrieveRefused(f"{source._peer} accepts no C-GET (the Study Root GET "
                                  "presentation context was rejected)")
        _pause_reactor(assoc)
        final = _final(assoc.send_c_get(query, GET_MODEL))
        if errors:
            raise SourceError(f"C-GET of study {study_uid} from {source._peer}: the node "
                              f"could not take an instance: {errors[0]}")
        code = int(final.Status) if final is not None else None
        if code == OK and expected.received == set(expected.instances):
            return
        if not expected.received:
            why = _why(assoc) if final is None else _summary(final)
            raise RetrieveRefused(f"{source._peer} refused C-GET of study {study_uid}: {why}")
        raise SourceError(f"C-GET of study {study_uid} from {source._peer} ended with "
                          f"{_summary(final)}; {len(expected.received)} of "
                          f"{len(expected.instances)} instances received")


def _move_lock(listen: tuple[str, int]) -> threading.Lock:
    with _LOCKS_GUARD:
        return _MOVE_LOCKS.setdefault(listen, threading.Lock())


class Receiver:
    """The node's Storage SCP for C-MOVE: started at a source's first move and kept until
    `close()` (a staging's end), so a study costs no server start and stop. It holds the
    process's lock for its listen address while it runs, and takes C-STORE only while a
    move is under way (`current`); anything else gets a failure status."""

    def __init__(self, source: DimseSource) -> None:
        self.listen = source.listen
        self.current: Callable[[Any], int] | None = None
        scp = AE(ae_title=source.store_aet)
        scp.require_calling_aet = [source.called_aet]  # only the PACS may store
        scp.acse_timeout = scp.dimse_timeout = scp.network_timeout = source.timeout
        for cx in StoragePresentationContexts:
            scp.add_supported_context(cx.abstract_syntax, [*UNCOMPRESSED, *COMPRESSED])
        self.lock = _move_lock(self.listen)
        self.lock.acquire()
        try:
            self.server = scp.start_server(self.listen, block=False, evt_handlers=[
                (evt.EVT_CONN_OPEN, _no_delay), (evt.EVT_C_STORE, self._on_store)])
        except (OSError, ValueError, RuntimeError) as exc:
            self.lock.release()
            reason = getattr(exc, "strerror", None) or exc
            raise SourceError(
                f"the node's Storage SCP for C-MOVE cannot listen on {self.listen[0]}:"
                f"{self.listen[1]}: {reason} (is another process of this node retrieving "
                "on the same port? give each its own AE title and listen port)") from exc

    def _on_store(self, event: Any) -> int:
        current = self.current
        return current(event) if current is not None else REFUSED_UNEXPECTED

    def close(self) -> None:
        try:
            self.server.shutdown()
        finally:
            self.lock.release()


def c_move(source: DimseSource, study_uid: str, expected: Expected, sink: Sink) -> None:
    """Retrieve the study by C-MOVE to the node's Storage SCP (`Receiver`)."""
    if not any(expected.instances.values()):
        raise SourceError(f"{source._peer} listed study {study_uid} without SOP classes")
    errors: list[str] = []
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    if source.receiver is None:
        source.receiver = Receiver(source)
    receiver = source.receiver
    receiver.current = _on_store(expected, sink, errors)
    try:
        with source._associate([build_context(MOVE_MODEL)]) as assoc:
            if not any(str(cx.abstract_syntax) == MOVE_MODEL
                       for cx in assoc.accepted_contexts):
                raise RetrieveRefused(f"{source._peer} accepts no C-MOVE (the Study Root "
                                      "MOVE presentation context was rejected)")
            _pause_reactor(assoc)
            final = _final(assoc.send_c_move(query, source.store_aet, MOVE_MODEL))
            why = _why(assoc) if final is None else _summary(final)
    finally:
        receiver.current = None
    listen = source.listen
    if errors:
        raise SourceError(f"C-MOVE of study {study_uid} from {source._peer}: the node "
                          f"could not take an instance: {errors[0]}")
    code = int(final.Status) if final is not None else None
    if code == OK and expected.received == set(expected.instances):
        return
    if not expected.received:
        hint = (f" (does the PACS know AE title {source.store_aet} at this node's address "
                f"and port {listen[1]}, with C-MOVE allowed?)")
        raise RetrieveRefused(f"{source._peer} refused C-MOVE of study {study_uid} to "
                              f"{source.store_aet}: {why}{hint}")
    raise SourceError(f"C-MOVE of study {study_uid} from {source._peer} ended with {why}; "
                      f"{len(expected.received)} of {len(expected.instances)} instances "
                      "received")


def stream_study(source: DimseSource, study_uid: str, sink: Sink,
                 instances: dict[str, str]) -> int:
    """Hand each instance of the study to `sink` by the source's retrieve mode; return how
    many came. `instances` is `list_instances` of the study."""
    from pynetdicom import _config

    if _config.STORE_RECV_CHUNKED_DATASET:
        # pynetdicom would then write each received dataset, identifiable, to a temporary
        # file before the handler sees it.
        raise SourceError("pynetdicom is set to receive C-STORE datasets into temporary "
                          "files (STORE_RECV_CHUNKED_DATASET): staging keeps them in memory "
                          "only, so it refuses")
    mode = source.retrieve_mode
    expected = Expected(dict(instances))
    if mode in ("auto", "get"):
        try:
            c_get(source, study_uid, expected, sink)
            source.retrieved_by = "C-GET"
            return len(expected.received)
        except RetrieveRefused:
            if mode == "get" or expected.received:
                raise
        source.retrieve_mode = "move"  # this PACS refuses C-GET: ask it no more
    c_move(source, study_uid, expected, sink)
    source.retrieved_by = "C-MOVE"
    return len(expected.received)
