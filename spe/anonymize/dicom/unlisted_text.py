"""Standard text attributes that PS3.15 Table E.1-1 does not list: removed unless known safe.

Table E.1-1 lists the attributes the standard knows to identify; free text outside it (an
Overlay Description, a Radiopharmaceutical typed at the console, any of hundreds of
comment, label and description attributes) is kept by the Basic Profile
as the table stands. This project removes it instead: every public attribute of pydicom's
data dictionary whose VR holds text (`VRS`) that the table does not list, that no rule of
the profile already handles, and that is not on the reviewed allow-list
`data/safe-text.json` (each entry with its reason) is treated as X/Z/D, decided by its Type
in the object's IOD as Table E.1-1's combined codes are (`iod.choose`): removed where it is
Type 3, emptied where Type 2, a dummy where Type 1.

VRs: LO, SH, ST, LT, UT, UC (free text), PN (names: already dropped everywhere), AE (an
application entity title names a device or a site) and UR (an address, which can carry a
host name or a query with identifiers). Not CS (coded strings: enumerated values and defined
terms, 16 characters, which decide other attributes' conditions), nor UI, DA, TM, DT, IS,
DS, AS (numbers, dates and UIDs, which the table and its options treat where they identify).
Group 0002 (file meta) is the profile's own step.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from pydicom.datadict import DicomDictionary

from spe.anonymize.dicom import table

ALLOW_LIST = Path(__file__).parent / "data" / "safe-text.json"
VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "AE", "UR"})


@cache
def safe() -> frozenset[int]:
    """The allow-listed tags, each reviewed with its reason in `data/safe-text.json`."""
    data = json.loads(ALLOW_LIST.read_text(encoding="utf-8"))
    return frozenset(int(entry["tag"], 16) for entry in data["keep"])


def is_text_vr(vr: str | None) -> bool:
    """True if any VR the element may have ("LO", "US or SS", ...) holds text."""
    return vr is not None and any(v in VRS for v in vr.split(" or "))


@cache
def unlisted() -> frozenset[int]:
    """Dictionary tags of a text VR that the table does not list and that are not safe."""
    allowed = safe()
    return frozenset(tag for tag, entry in DicomDictionary.items()
                     if tag >> 16 != 0x0002 and tag not in table.EXACT
                     and tag not in allowed and is_text_vr(entry[0]))
