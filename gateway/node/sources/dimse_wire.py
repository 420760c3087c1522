"""What every DIMSE association of a node shares, for listing (sources/dimse.py) and for
staging's retrieval (sources/dimse_retrieve.py): the transfer syntaxes offered, the storage
contexts within the 128-context limit, TCP_NODELAY, pynetdicom's reactor race, and why an
exchange got no answer."""

from __future__ import annotations

import socket
import time
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import StoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext

MAX_CONTEXTS = 128  # presentation context IDs are the odd numbers 1-255 (PS3.8 9.3.2.2)
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
# Offered as extra contexts when there is room, so compressed instances arrive as stored
# rather than decompressed by the peer.
COMPRESSED = [
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
    JPEG2000Lossless, JPEG2000, RLELossless, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]
PENDING = (0xFF00, 0xFF01)


def status_of(status: Dataset) -> int | None:
    return int(status.Status) if "Status" in status else None


def no_delay(event: Any) -> None:
    """Send each PDU at once: with Nagle's algorithm and the peer's delayed ACKs, every
    request-response round trip would wait some 40 ms."""
    try:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


def pause_reactor(assoc: Any) -> None:
    """Park the association's reactor thread before a request is sent.

    pynetdicom (3.0.4) pauses its reactor in each send_*() by clearing an event, then
    waiting for a flag that the reactor sets just BEFORE it waits on that event; a reactor
    that passed the event a moment earlier still takes the next message off the queue and
    drops it as an unexpected request. With TCP_NODELAY the peer's first answer is fast
    enough to land in that window: C-FIND lost a pending match (a series, with its
    instances) about once in fifteen listings of a small Orthanc. Here the flag is reset
    after the event is cleared, so seeing it set again means the reactor has reached the
    cleared event and is blocked on it. The wait is bounded: a reactor already blocked (or
    gone) never sets it again.
    """
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None or not hasattr(assoc, "_is_paused"):
        return
    checkpoint.clear()
    assoc._is_paused = False
    deadline = time.monotonic() + 0.05
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0002)


def why_no_answer(assoc: Any) -> str:
    """Why a DIMSE exchange got no response: the peer aborted, or it did not answer."""
    # The association thread marks an abort after the waiting request has returned.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if assoc.is_aborted or assoc.acse.is_aborted():
            return "association aborted"
        if not assoc.is_alive():
            break
        time.sleep(0.02)
    return "association aborted" if assoc.is_aborted else (
        f"no answer within {assoc.dimse_timeout:.0f} s")


def storage_contexts(sop_classes: list[str]) -> list[PresentationContext]:
    """Contexts for receiving `sop_classes` within the 128-context limit (with one
    left for the GET model): compressed syntaxes too when there is room."""
    room = MAX_CONTEXTS - 1
    if not sop_classes:  # the peer did not say: offer the usual storage classes
        return [build_context(cx.abstract_syntax, UNCOMPRESSED)
                for cx in StoragePresentationContexts[:room]]
    contexts = [build_context(uid, UNCOMPRESSED) for uid in sop_classes[:room]]
    if len(sop_classes) * (1 + len(COMPRESSED)) <= room:
        contexts += [build_context(uid, ts) for uid in sop_classes for ts in COMPRESSED]
    return contexts
