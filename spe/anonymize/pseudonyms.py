"""Layer 2: keyed pseudonyms, DICOM UIDs and date shifts, one key per data permit.

A `PermitKey` is derived (HKDF-SHA256) from the node secret and the permit id, so within a
permit the same patient gets the same pseudonym, UIDs and date shift at every site and in
every run, while two permits can never be linked. Every output is an HMAC-SHA256 of the
input under that key with a "kind" prefix, so a pseudonym of one kind says nothing about
another (a patient pseudonym cannot be matched against a UID or a resource id).

The DICOM and FHIR de-identifiers both use this protocol, which is what keeps a patient's
images and clinical records linked after de-identification:

    PatientID / MRN         -> key.pseudonym(mrn, "patient", 16)
    any DICOM UID           -> key.uid(uid)
    every date of a patient -> shifted by key.date_shift_days(mrn)

The `shift_*` functions move a date by whole days and keep the value's precision and
format. They never raise on a value they cannot read: they return None, and the caller
drops the element (a date that cannot be shifted must not leave unshifted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import date, datetime, timedelta
from os import PathLike
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
MIN_SECRET_BYTES = 16
MIN_PSEUDONYM_LENGTH = 8
MAX_PSEUDONYM_LENGTH = 52  # base32 of a 32-byte HMAC without padding
MAX_SHIFT_DAYS = 1095  # three years back at most

# Changing either constant changes every pseudonym ever issued, so they are versioned.
_HKDF_SALT = b"ehds-spe permit key v1"
_HKDF_INFO = b"ehds-spe pseudonyms\x00"


class PermitKey:
    """The key material of one permit (or of one node when no permit applies)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise ValueError(f"a PermitKey needs exactly {KEY_BYTES} bytes of key material")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "PermitKey(<secret>)"  # the key must not end up in logs

    @classmethod
    def derive(cls, secret: bytes | str, permit_id: str = "") -> PermitKey:
        """The key of `permit_id` derived from a node secret (or a key file's bytes)."""
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if not isinstance(secret, bytes | bytearray):
            raise TypeError("the pseudonym secret must be bytes")
        if not secret:
            raise ValueError("the pseudonym secret is empty; configure a node secret or key file")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the pseudonym secret is {len(secret)} bytes; at least "
                             f"{MIN_SECRET_BYTES} are needed for the pseudonyms to be unguessable")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_HKDF_SALT,
                    info=_HKDF_INFO + permit_id.encode("utf-8"))
        return cls(hkdf.derive(bytes(secret)))

    @classmethod
    def from_key_file(cls, path: str | PathLike[str], permit_id: str = "") -> PermitKey:
        """The key of `permit_id` derived from the bytes of a key file (used as they are)."""
        file = Path(path)
        try:
            secret = file.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"pseudonym key file not found: {file}") from None
        except IsADirectoryError:
            raise ValueError(f"pseudonym key file is a directory: {file}") from None
        if not secret:
            raise ValueError(f"pseudonym key file is empty: {file}")
        try:
            return cls.derive(secret, permit_id)
        except ValueError as exc:
            raise ValueError(f"pseudonym key file {file}: {exc}") from None

    def _mac(self, kind: str, value: str) -> bytes:
        message = kind.encode("utf-8") + b"\x00" + value.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def pseudonym(self, value: str, kind: str = "id", length: int = 16) -> str:
        """Base32 (A-Z, 2-7) of HMAC(key, kind NUL value), cut to `length` characters."""
        if not MIN_PSEUDONYM_LENGTH <= length <= MAX_PSEUDONYM_LENGTH:
            raise ValueError(f"pseudonym length must be {MIN_PSEUDONYM_LENGTH}.."
                             f"{MAX_PSEUDONYM_LENGTH}, not {length}")
        text = base64.b32encode(self._mac(kind, value)).decode("ascii").rstrip("=")
        return text[:length]

    def uid(self, value: str) -> str:
        """A DICOM UID under the 2.25 (UUID-derived) root: at most 44 characters."""
        number = int.from_bytes(self._mac("uid", value)[:16], "big")
        # 2.25.0 is a valid UID, but a zero would read as a leading-zero component to some
        # validators; the chance is 2**-128, the guard is free.
        return f"2.25.{number or 1}"

    def date_shift_days(self, patient_id: str) -> int:
        """The patient's date offset, in -MAX_SHIFT_DAYS..-1 (never 0, never forward)."""
        number = int.from_bytes(self._mac("dateshift", patient_id)[:8], "big")
        return -(number % MAX_SHIFT_DAYS + 1)


def shift_da(value: str, days: int) -> str | None:
    """A DICOM DA (YYYYMMDD) moved by `days`; None if it is not a valid date."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


_DT = re.compile(
    r"(?P<Y>\d{4})(?:(?P<m>\d{2})(?:(?P<d>\d{2})(?:(?P<H>\d{2})(?:(?P<M>\d{2})"
    r"(?:(?P<S>\d{2})(?P<f>\.\d{1,6})?)?)?)?)?)?(?P<z>[+-]\d{4})?"
)


def shift_dt(value: str, days: int) -> str | None:
    """A DICOM DT moved by `days`, at the precision it had; None if it is not a valid DT.

    A partial value (YYYY, YYYYMM, ...) stands for a period; the first instant of the period
    is shifted and the result truncated back to the same precision, so "2019" shifted by -30
    days is "2018" and "201903" is "201902". The fraction and the UTC offset are kept as they
    are: a shift by whole days does not change them.
    """
    if not isinstance(value, str):
        return None
    match = _DT.fullmatch(value.strip())
    if match is None:
        return None
    parts = match.groupdict()
    offset = parts["z"]
    if offset is not None and not (int(offset[1:3]) <= 14 and int(offset[3:]) < 60):
        return None
    moment = _shifted(parts, days)
    if moment is None:
        return None
    out = f"{moment.year:04d}"
    for field, stamp in (("m", moment.month), ("d", moment.day), ("H", moment.hour),
                         ("M", moment.minute), ("S", moment.second)):
        if parts[field] is None:
            break
        out += f"{stamp:02d}"
    return out + (parts["f"] or "") + (offset or "")


_FHIR = re.compile(
    r"(?P<Y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})"
    r"(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<z>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def shift_fhir(value: str, days: int) -> str | None:
    """A FHIR date, dateTime or instant moved by `days`, in the format it had.

    Precision and format are kept (YYYY, YYYY-MM, YYYY-MM-DD, or a time with or without
    seconds, fraction and time zone); partial dates shift their first day and are truncated
    back, as `shift_dt` does. The time of day and the zone do not change. None if the value
    is not a FHIR date.
    """
    if not isinstance(value, str):
        return None
    match = _FHIR.fullmatch(value.strip())
    if match is None:
        return None
    parts = match.groupdict()
    zone = parts["z"]
    if zone not in (None, "Z") and not (int(zone[1:3]) <= 14 and int(zone[4:]) < 60):
        return None
    moment = _shifted(parts, days)
    if moment is None:
        return None
    out = f"{moment.year:04d}"
    if parts["m"] is not None:
        out += f"-{moment.month:02d}"
    if parts["d"] is not None:
        out += f"-{moment.day:02d}"
    if parts["H"] is not None:
        out += f"T{moment.hour:02d}:{moment.minute:02d}"
        if parts["S"] is not None:
            out += f":{moment.second:02d}{parts['f'] or ''}"
        out += zone or ""
    return out


def _shifted(parts: dict[str, str | None], days: int) -> datetime | None:
    """The first instant of the (possibly partial) value, moved by `days`."""
    def number(field: str, missing: int) -> int:
        text = parts.get(field)
        return missing if text is None else int(text)

    try:
        moment = datetime(number("Y", 0), number("m", 1), number("d", 1), number("H", 0),
                          number("M", 0), number("S", 0))
        return moment + timedelta(days=days)
    except (ValueError, OverflowError, TypeError):
        return None
