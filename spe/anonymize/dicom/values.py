"""Replacement values: dummies for D, and the date shift for C under Modified Dates."""

from __future__ import annotations

from datetime import date, timedelta

# D needs a non-zero-length value that still parses as its VR.
DUMMY: dict[str, object] = {
    "PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000",
    "AS": "000Y", "DS": "0", "IS": "0", "CS": "ANONYMIZED", "AE": "ANONYMIZED",
    "UR": "urn:anonymized",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0,
    "OB": b"\x00\x00", "OW": b"\x00\x00", "OD": b"\x00" * 8, "OF": b"\x00" * 4,
    "OL": b"\x00" * 4, "OV": b"\x00" * 8, "UN": b"\x00\x00",
}
TEXT_DUMMY = "ANONYMIZED"
MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "UC": 64, "ST": 1024, "LT": 10240,
              "UT": 10240}
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})


def dummy(vr: str) -> object:
    if vr in DUMMY:
        return DUMMY[vr]
    return TEXT_DUMMY[:MAX_LENGTH.get(vr, 64)]


def shift_da(value: str, days: int) -> str | None:
    """Shift YYYYMMDD (or a partial YYYY / YYYYMM) keeping its precision; None if unparsable.

    A partial date is anchored on the first day of its period, shifted, and cut back to its
    precision, so a year stays a year.
    """
    value = value.strip()
    if not value.isdigit() or len(value) not in (4, 6, 8):
        return None
    try:
        anchor = date(int(value[:4]), int(value[4:6] or 1), int(value[6:8] or 1))
        shifted = anchor + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return shifted.strftime("%Y%m%d")[:len(value)]


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of a DT; time, fraction and UTC offset are kept as they were."""
    value = value.strip()
    cut = next((i for i, c in enumerate(value) if c in "+-"), len(value))
    stamp, offset = value[:cut], value[cut:]
    head = shift_da(stamp[:8], days) if len(stamp) >= 4 else None
    if head is None:
        return None
    return head + stamp[8:] + offset
