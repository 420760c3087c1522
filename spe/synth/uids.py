"""Deterministic identifiers: DICOM UIDs under 2.25 and FHIR resource ids.

Both are hashes of a key naming the object (seed, site, patient, study, ...), so the same
object gets the same identifier whichever order things are generated in, and different
seeds give unrelated identifiers. A 2.25 UID is the decimal form of a 128-bit number
(PS3.5 B.2); here the number is a BLAKE2b digest rather than a random UUID.
"""

from __future__ import annotations

import hashlib
import uuid


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


def dicom_uid(key: str) -> str:
    return f"2.25.{int.from_bytes(_digest(key), 'big')}"


def resource_id(key: str) -> str:
    """A FHIR id shaped like a UUID (what Bulk Data exports usually carry)."""
    return str(uuid.UUID(bytes=_digest(key), version=4))


IMPLEMENTATION_CLASS_UID = dicom_uid("spe.synth implementation")
IMPLEMENTATION_VERSION_NAME = "SPE_SYNTH_1"


def instance_uid(series_uid: str, number: int) -> str:
    """SOP Instance UID of image `number` of a series (the FHIR and DICOM writers agree)."""
    return dicom_uid(f"{series_uid}/{number}")
