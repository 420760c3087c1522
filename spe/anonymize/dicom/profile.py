"""Apply PS3.15 Table E.1-1 with its options to a dataset, in place, at every nesting level.

Everything that can be decided from the options alone (the action per tag, which tags get
pseudonyms, which are identifying for descriptor cleaning) is decided once in
`Deidentifier.__init__`, so the per-element work is a dict lookup by tag int. Elements that
are kept are never converted from their raw form, which is where the speed comes from; in a
dataset read from a file, elements emptied, replaced by a dummy or given new UIDs become raw
elements too, holding the bytes pydicom would have written (so neither this step nor the
writer encodes them), the markers are encoded once per option set, and a sequence whose
encoded items hold nothing the profile changes is not decoded at all. Datasets built in
memory take the plain path, with the same result (tests compare the two).

Burned-in pixel text is another step's job: pass it as `pixel_cleaner` (called on every
object before the header is touched, so it can still read what it must find; it masks or
raises to exclude); without one, objects that say BurnedInAnnotation=YES come back with a
warning and the Clean Pixel Data Option is not claimed.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from pydicom import config
from pydicom.datadict import (
    DicomDictionary,
    dictionary_VR,
    keyword_for_tag,
    repeater_has_tag,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from spe.anonymize.dicom import descriptors, iod, table, unlisted_text
from spe.anonymize.dicom.markers import mark
from spe.anonymize.dicom.options import COMBINED, Options, resolve
from spe.anonymize.dicom.private import private_to_remove
from spe.anonymize.dicom.values import MAX_LENGTH, TEXT_VRS, dummy, shift_da, shift_dt
from spe.anonymize.pseudonyms import MAX_PSEUDONYM_LENGTH

PATIENT_ID = 0x00100020
SOP_CLASS_UID = 0x00080016
_UNSEEN = object()
SOP_INSTANCE_UID = 0x00080018
MEDIA_SOP_INSTANCE_UID = BaseTag(0x00020003)
BURNED_IN = 0x00280301
DATE_COLUMN = "rtnLongModifDatesOpt"
# File meta AE titles name the sending device; the table does not list group 0002.
META_DEVICE_TAGS = (0x00020016, 0x00020017, 0x00020018)
META_PRIVATE_TAGS = (0x00020100, 0x00020102)
# VRs whose empty value is None rather than "" (numbers, bytes).
NON_TEXT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "OB", "OW", "OD",
                          "OF", "OL", "OV", "UN", "AT"})
# Explicit VRs as they are on the wire, and those with a 4-byte length.
_WIRE_VRS = frozenset(vr.encode("ascii") for vr in STANDARD_VR)
_WIRE_LONG_VRS = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_HEADER = {True: struct.Struct("<HHL"), False: struct.Struct(">HHL")}
_SHORT_LENGTH = {True: struct.Struct("<H"), False: struct.Struct(">H")}
_LONG_LENGTH = {True: struct.Struct("<L"), False: struct.Struct(">L")}
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
# Combined codes resolved per attribute by its Type (X/Z/U* is not: U* keeps and remaps).
TYPED_CODES = frozenset({"X/Z", "X/D", "Z/D", "X/Z/D"})
# An attribute of interest absent from a known IOD's tree is not defined there.
_NOT_IN_IOD = ("3", {})
# Entries kept per cache (UIDs, pseudonyms) before it is emptied and starts again.
CACHE_LIMIT = 1 << 14


class Pseudonymizer(Protocol):
    """What needs a key; `spe.anonymize.pseudonyms.PermitKey` implements it per permit.

    It must be deterministic (the same input always gives the same output): a Deidentifier
    keeps the UIDs and pseudonyms it has been given, since they recur across files.
    """

    def uid(self, value: str) -> str: ...

    def pseudonym(self, value: str, kind: str, length: int) -> str: ...

    def date_shift_days(self, patient_id: str) -> int: ...


@dataclass
class DeidResult:
    counts: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    dates_shifted: bool = False


@dataclass
class _Context:
    result: DeidResult
    patient_id: str
    identifiers: descriptors.Identifiers | None
    days: int | None = None


@dataclass(frozen=True)
class _Step:
    action: str  # one of X Z D K C U U*
    column: str  # the table column that decided it
    fallback: str  # the basic action, used by a C with no rule for the element's VR
    code: str = ""  # a combined basic code (X/Z, X/D, Z/D, X/Z/D), decided per Type
    sequence: bool = False  # the dictionary's VR is SQ
    typed: bool = False  # the action depends on the attribute's Type where it sits


# Standard attributes the table does not list: names are dropped, sequences walked into.
_DROP_NAME = _Step("X", "dictionary", "X")
_WALK = _Step("walk", "dictionary", "walk")

# Beyond Table E.1-1 (stricter than the standard): issuers of the identifiers the profile
# removes name the assigning institution and its systems (e.g. "<hospital>-RIS"), which
# Retain Institution Identity exists to keep only on request.
_BEYOND_TABLE = {
    0x00080051: "IssuerOfAccessionNumberSequence",
    0x00100024: "IssuerOfPatientIDQualifiersSequence",
    0x00400031: "LocalNamespaceEntityID",
    0x00400032: "UniversalEntityID",
    0x00400033: "UniversalEntityIDType",
}
_DROP_ISSUER = _Step("X", "beyond-table", "X")
# Beyond Table E.1-1 too: a standard text attribute the table does not list and that is not
# known safe (`unlisted_text`) is X/Z/D, decided by its Type where it sits.
_UNLISTED_TEXT = _Step("X", "unlisted-text", "X", "X/Z/D", typed=True)


def _build_plan(columns: set[str]) -> dict[int, _Step]:
    plan = {}
    for tag, (basic, option_actions) in table.EXACT.items():
        action, column = resolve(basic, option_actions, columns)
        code = basic if basic in TYPED_CODES else ""
        sequence = DicomDictionary.get(tag, ("",))[0] == "SQ"
        typed = column == "basicProfile" and bool(code or (action == "D" and sequence))
        plan[tag] = _Step(action, column, COMBINED.get(basic, basic), code, sequence, typed)
    return plan


def _id_kinds(plan: dict[int, _Step]) -> dict[int, tuple[str, int]]:
    """D on an identifier becomes a keyed pseudonym, so records still link (layer 2)."""
    kinds = {PATIENT_ID: ("patient", 16)}
    for tag, step in plan.items():
        keyword = keyword_for_tag(tag)
        vr = DicomDictionary.get(tag, ("",))[0]
        if step.action == "D" and vr in TEXT_VRS and keyword.endswith(("ID", "Identifier")):
            # as long as the VR allows, within what a keyed pseudonym can be (a 52-character
            # base32 HMAC): a longer request failed the whole file
            kinds.setdefault(tag, (keyword, min(MAX_LENGTH.get(vr, 64),
                                                MAX_PSEUDONYM_LENGTH)))
    return kinds


class Deidentifier:
    def __init__(self, options: Options, pseudonymizer: Pseudonymizer,
                 safe_private: set[tuple[str, int]] | None = None,
                 pixel_cleaner: Callable[[Dataset], None] | None = None) -> None:
        if options.clean_pixel_data and pixel_cleaner is None:
            raise ValueError("clean_pixel_data needs a pixel_cleaner")
        self.options = options
        self.pseudonymizer = pseudonymizer
        self.safe_private = frozenset(safe_private or ())
        self.pixel_cleaner = pixel_cleaner
        columns = options.columns()
        self._enabled = tuple(options.enabled())
        self._plan = _build_plan(columns)
        self._masked = [(mask, value, _Step(*resolve(basic, opts, columns),
                                            COMBINED.get(basic, basic)))
                        for mask, value, basic, opts in table.MASKED]
        self._masked_high = frozenset(value >> 24 for _, value, _ in self._masked)
        self._retain_private = "rtnSafePrivOpt" in columns
        self._ids = _id_kinds(self._plan)
        untouched = {t for t, s in self._plan.items() if s.action == "K"}
        self._identifying = frozenset(
            t for t, s in self._plan.items()
            if t not in untouched and "cleanDescOpt" not in table.EXACT[t][1])
        self._text_cleaning = any(
            s.action == "C" and s.column != DATE_COLUMN for s in self._plan.values())
        self._shifts_dates = any(
            s.action == "C" and s.column == DATE_COLUMN for s in self._plan.values())
        # One lookup per element: the plan, plus the standard attributes the table does not
        # list but that are still handled, names (dropped) and sequences (walked into).
        self._steps: dict[int, _Step] = dict(self._plan)
        unlisted = unlisted_text.unlisted()
        for tag, entry in DicomDictionary.items():
            if tag in self._plan or self._masked_step(tag) is not None:
                continue
            if tag in _BEYOND_TABLE and not options.retain_institution_identity:
                self._steps[tag] = _DROP_ISSUER
            elif entry[0] == "PN":
                self._steps[tag] = _DROP_NAME
            elif entry[0] == "SQ":
                self._steps[tag] = _WALK
            elif tag in unlisted and tag not in _BEYOND_TABLE:
                self._steps[tag] = _UNLISTED_TEXT
        # The VR an implicit VR element will be given when read, where the dictionary has
        # only one; the others are left for pydicom to decide.
        self._vrs = {tag: entry[0] for tag, entry in DicomDictionary.items()
                     if tag in self._steps and " or " not in entry[0]}
        # Layer 2 is deterministic per key: the same Study/Series/FrameOfReference UIDs and
        # patients recur across the files of one batch, so their HMACs are kept.
        self._uids: dict[bytes, bytes] = {}
        self._uid_values: dict[str, str] = {}
        self._pseudonyms: dict[tuple[str, str, int], str] = {}
        self._dummies: dict[tuple[str, bool], bytes | None] = {}
        self._trees: dict[bytes | str, iod.Tree | None] = {}

    def apply(self, ds: Dataset) -> DeidResult:
        result = DeidResult()
        identifiers = None
        if self._text_cleaning:
            identifiers = descriptors.collect(ds, self._identifying,
                                              descriptors.Identifiers())
        patient = ds.get("PatientID") if self._shifts_dates else None
        ctx = _Context(result, str(patient or ""), identifiers)
        pixels_cleaned = False
        if self.pixel_cleaner is not None:
            # The cleaner judges every image (an absent flag on an ultrasound or a secondary
            # capture is as suspect as YES); it masks, or raises to exclude the object.
            self.pixel_cleaner(ds)
            pixels_cleaned = True
        elif self._burned_in(ds):
            result.warnings.append("BurnedInAnnotation=YES: pixel data not cleaned")
        tree = self._types(ds)
        self._drop_overlays_and_curves(ds, ctx)
        self._walk(ds, ctx, tree)
        self._file_meta(ds, ctx)
        applied = [name for name in self._enabled
                   if name != "clean_pixel_data" or pixels_cleaned]
        if self.options.retain_long_full_dates:
            dates = "UNMODIFIED"
        elif result.dates_shifted:
            dates = "MODIFIED"
        else:
            dates = "REMOVED"
            if "retain_long_modified_dates" in applied:
                applied.remove("retain_long_modified_dates")
        mark(ds, applied, dates)
        return result

    @staticmethod
    def _burned_in(ds: Dataset) -> bool:
        raw = ds._dict.get(BURNED_IN)
        if raw is None:
            return False
        if isinstance(raw, RawDataElement) and raw.value is not None and b"YES" not in raw.value:
            return False  # cannot read as YES in any encoding: no need to decode it
        return ds.get("BurnedInAnnotation") == "YES"

    def _types(self, ds: Dataset) -> iod.Tree | None:
        """The PS3.3 Types tree of the object's IOD, by its SOP Class UID; None if unknown."""
        raw = ds._dict.get(SOP_CLASS_UID)
        if raw is None:
            return None
        key = raw.value if isinstance(raw, RawDataElement) else str(raw.value)
        tree = self._trees.get(key, _UNSEEN)
        if tree is _UNSEEN:
            try:
                uid = key.decode("ascii") if isinstance(key, bytes) else key
            except UnicodeDecodeError:
                uid = ""
            tree = iod.types_for(uid) if uid else None
            if len(self._trees) >= CACHE_LIMIT:
                self._trees.clear()
            self._trees[key] = tree
        return tree

    @staticmethod
    def _drop_overlays_and_curves(ds: Dataset, ctx: _Context) -> None:
        """Remove every Overlay (60xx) and Curve (50xx) group whole.

        Table E.1-1 removes Overlay Data (60xx,3000) and Curve Data (50xx,3000) (X; under
        Clean Graphics a C that has no rule for pixel bits here, so X too), and Overlay
        Comments. What is left of the group is then an Overlay Plane module (PS3.3 C.9.2)
        without its Type 1 Overlay Data, an invalid object, and Overlay Description
        (60xx,0022) and Overlay Label (60xx,1500), which the table does not list, keep
        their free text. The module goes as a whole, which the IODs allow (it is U or C).
        """
        elements = ds._dict
        drop = [key for key in elements if key >> 16 & 0xFFE1 in (0x5000, 0x6000)]
        for key in drop:
            del elements[key]
        ctx.result.counts["X"] += len(drop)

    def _by_type(self, step: _Step, tag: int, node: iod.Tree | None) -> str:
        """The action of a combined code, or of D on a sequence, by the Type here."""
        kind = None if node is None else node.get(tag, _NOT_IN_IOD)[0]
        if tag == PATIENT_ID:
            # Z/D: D is valid at any Type, and the keyed pseudonym D gives here is what links
            # a patient's objects inside one permit (layer 2), so it is kept.
            return "D"
        if step.code:
            return iod.choose(step.code, kind, step.sequence)
        # D on a sequence: a dummy item where the sequence is required (Type 1 or 2), and
        # it is removed where it is optional or its items' needs are unknown.
        return "D" if kind in iod.REQUIRED or kind in iod.EMPTY_ALLOWED else "X"

    @staticmethod
    def _child(node: iod.Tree | None, tag: int) -> iod.Tree | None:
        return None if node is None else node.get(tag, _NOT_IN_IOD)[1]

    def _walk(self, ds: Dataset, ctx: _Context, node: iod.Tree | None) -> None:
        steps, counts = self._steps, ctx.result.counts
        drop_private = None
        if self._retain_private:
            drop_private = private_to_remove(ds, self.safe_private)
        # Working on the element dict itself skips Tag() parsing, BaseTag's Python-level
        # __eq__ and the setters' hooks, which cost more than the profile's own work.
        elements = ds._dict
        dropped_private = False
        for key, raw in list(elements.items()):
            tag = int(key)
            step = steps.get(tag)
            if step is None:
                if tag >> 16 & 1:
                    if drop_private is None or tag in drop_private:
                        del elements[key]
                        dropped_private = True
                        counts["X"] += 1
                    elif tag & 0xFFFF >= 0x1000 and raw.VR == "SQ":
                        self._items(ds[key].value, ctx, self._child(node, tag))
                    continue
                if tag >> 24 in self._masked_high:
                    step = self._masked_step(tag)
                if step is None:
                    if tag not in DicomDictionary:  # the dictionary's own are in `steps`
                        self._unlisted(ds, key, raw.VR, ctx, self._child(node, tag))
                    continue
            action = step.action
            if step.typed:
                action = self._by_type(step, tag, node)
            if action == "X":
                del elements[key]
                counts["X"] += 1
            elif action == "walk":
                if not self._inert(raw):
                    self._items(ds[key].value, ctx, self._child(node, tag))
            else:
                self._act(ds, key, raw, action, step, ctx, node)
        if dropped_private and ds._private_blocks:
            ds._private_blocks = {}  # what `del ds[key]` does for a private creator

    def _inert(self, raw) -> bool:
        """True if the still encoded sequence `raw` surely holds nothing the profile changes.

        Its items are scanned without decoding them: every attribute must be a standard
        one the table does not list and that is neither a name nor a sequence other than
        one scanned the same way (no private, repeating-group, group-length or unknown
        attribute). Anything else, or anything unexpected in the encoding, answers False
        and the sequence is decoded and walked as usual. An inert sequence is left as read,
        so writing the object copies its bytes.
        """
        if not isinstance(raw, RawDataElement) or raw.value is None or raw.length == UNDEFINED:
            return False
        if raw.VR != "SQ" and not (raw.VR is None and raw.is_implicit_VR):
            return False
        data = raw.value
        try:
            end = self._scan_items(data, 0, len(data), raw.is_implicit_VR,
                                   raw.is_little_endian)
        except struct.error:  # truncated
            return False
        return end == len(data)

    def _scan_items(self, data: bytes, pos: int, end: int | None, implicit: bool,
                    little: bool) -> int:
        """Scan the items from `pos` to `end` (None: to the sequence delimiter); the
        position after them, or -1 if they are not inert."""
        header = _HEADER[little]
        while end is None or pos < end:
            tag_group, tag_element, length = header.unpack_from(data, pos)
            tag = tag_group << 16 | tag_element
            pos += 8
            if tag == SEQUENCE_END and end is None:
                return pos
            if tag != ITEM:
                return -1
            pos = self._scan_item(data, pos, None if length == UNDEFINED else pos + length,
                                  implicit, little)
            if pos < 0:
                return -1
        return pos if pos == end else -1

    def _scan_item(self, data: bytes, pos: int, end: int | None, implicit: bool,
                   little: bool) -> int:
        header, steps = _HEADER[little], self._steps
        while end is None or pos < end:
            tag_group, tag_element, length = header.unpack_from(data, pos)
            tag = tag_group << 16 | tag_element
            if tag == ITEM_END and end is None:
                return pos + 8
            if implicit:
                vr = None
                pos += 8
            else:
                vr = data[pos + 4:pos + 6]
                if vr not in _WIRE_VRS:
                    return -1
                if vr in _WIRE_LONG_VRS:
                    length = _LONG_LENGTH[little].unpack_from(data, pos + 8)[0]
                    pos += 12
                else:
                    length = _SHORT_LENGTH[little].unpack_from(data, pos + 6)[0]
                    pos += 8
            if tag_group & 1 or not tag_element or tag not in DicomDictionary:
                return -1  # private, group length, or unknown: the walk decides
            step = steps.get(tag)
            if step is _WALK and vr in (None, b"SQ"):
                pos = self._scan_items(data, pos, None if length == UNDEFINED else pos + length,
                                       implicit, little)
                if pos < 0:
                    return -1
                continue
            if step is not None or vr == b"SQ" or length == UNDEFINED:
                return -1
            if tag >> 24 in self._masked_high and self._masked_step(tag) is not None:
                return -1
            pos += length
        return pos if pos == end else -1

    def _masked_step(self, tag: int) -> _Step | None:
        for mask, value, step in self._masked:
            if tag & mask == value:
                return step
        return None

    def _unlisted(self, ds: Dataset, key, vr: str | None, ctx: _Context,
                  node: iod.Tree | None) -> None:
        """An attribute neither the table nor the dictionary knows, by the VR it came with.

        Names never survive, listed or not, nor does other text (`unlisted_text.VRS`): a
        public attribute pydicom does not know has no Type to honour and no review. One
        whose VR is not known at all (implicit VR, or UN) may hold text as well: it goes.
        """
        if vr is None:  # implicit VR: a repeating group's attribute has its VR there
            vr = _repeater_vr(key)
        if vr is None or vr == "UN" or vr in unlisted_text.VRS:
            del ds._dict[key]
            ctx.result.counts["X"] += 1
        elif vr == "SQ":
            self._items(ds[key].value, ctx, node)

    def _items(self, items, ctx: _Context, node: iod.Tree | None) -> None:
        for item in items or ():
            self._walk(item, ctx, node)

    def _put(self, ds: Dataset, key, raw, vr: str, data: bytes) -> bool:
        """Replace the element by `data`, already encoded; False if its encoding is unknown.

        The replacement is what pydicom would have written for the value, so writing the
        object copies it, and reading it back decodes it as any element read from a file.
        """
        if isinstance(raw, RawDataElement):
            implicit, little = raw.is_implicit_VR, raw.is_little_endian
        else:
            implicit, little = ds.original_encoding
            if implicit is None or little is None:
                return False
        ds._dict[key] = RawDataElement(key, vr, len(data), data, 0, implicit, little)
        return True

    def _act(self, ds: Dataset, tag, raw, action: str, step: _Step, ctx: _Context,
             node: iod.Tree | None) -> None:
        counts = ctx.result.counts
        if action == "X":
            del ds._dict[tag]
            counts["X"] += 1
            return
        vr = raw.VR
        if vr is None:  # implicit VR: what reading it would give, when the dictionary knows
            vr = self._vrs.get(tag)
        if vr in (None, "UN") or " or " in vr:  # unknown or ambiguous: let pydicom decide
            vr = ds[tag].VR
            raw = ds._dict[tag]
        if action == "U*":
            action = "U" if vr in ("UI", "SQ") else "Z"
        if action in ("Z", "D") and vr != "UI" and not (action == "D" and vr == "SQ") \
                and tag not in self._ids:
            # the old value is not needed: skip decoding it
            if action == "Z":
                data = b""
            else:
                data = self._dummy_data(vr, raw.is_little_endian if raw.is_raw
                                        else ds.original_encoding[1])
            if data is None or not self._put(ds, tag, raw, vr, data):
                value = self._empty(vr) if action == "Z" else self._dummy(tag, None, vr)
                ds._dict[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
            counts[action] += 1
            return
        if action == "U" and vr == "UI":
            if isinstance(raw, RawDataElement) and raw.value is not None:
                # map the bytes ourselves: pydicom's UID parsing and checks are the cost
                data = self._uid_data(raw.value)
                if data is None or not self._put(ds, tag, raw, vr, data):
                    value = self._uid_list(raw.value)
                    value = value[0] if len(value) == 1 else value
                    ds._dict[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
                counts["U"] += 1
                return
        if action == "K" and vr != "SQ":
            counts["K"] += 1  # nothing to do, nothing to decode
            return
        elem = ds[tag]
        vr = elem.VR
        child = self._child(node, int(tag)) if vr == "SQ" else None
        if action == "K":
            if vr == "SQ":
                self._items(elem.value, ctx, child)
        elif action == "Z":
            elem.value = [] if vr == "SQ" else elem.empty_value
        elif action == "U":
            if vr == "SQ":
                self._items(elem.value, ctx, child)
            elif vr == "UI":
                elem.value = self._map(elem.value, self._uid)
            else:
                elem.value = elem.empty_value
                action = "Z"
        elif action == "D":
            if vr == "SQ":
                elem.value = [self._dummy_item(child or {}, elem.value)]
            else:
                elem.value = self._dummy(tag, elem.value, vr)
        elif not self._clean(ds, tag, elem, step, ctx, child):
            fallback = self._by_type(step, int(tag), node) if step.code else step.fallback
            self._act(ds, tag, ds._dict[tag], fallback, step, ctx, node)
            return
        counts[action] += 1

    def _uid(self, value: str) -> str:
        uid = self._uid_values.get(value)
        if uid is None:
            uid = self.pseudonymizer.uid(value)
            if len(self._uid_values) >= CACHE_LIMIT:
                self._uid_values.clear()
            self._uid_values[value] = uid
        return uid

    def _uid_list(self, data: bytes) -> list[str]:
        old = data.decode("ascii", "replace").rstrip("\0 ").split("\\")
        return [self._uid(v.strip()) if v.strip() else "" for v in old]

    def _uid_data(self, data: bytes) -> bytes | None:
        """The encoded UI value for the encoded `data`, each UID mapped; None if not ASCII."""
        mapped = self._uids.get(data)
        if mapped is None:
            text = "\\".join(self._uid_list(data))
            if not text.isascii():
                return None
            mapped = text.encode("ascii")
            if len(mapped) % 2:
                mapped += b"\0"  # UI pads with NUL, as pydicom writes it
            if len(self._uids) >= CACHE_LIMIT:
                self._uids.clear()
            self._uids[data] = mapped
        return mapped

    def _dummy_data(self, vr: str, little: bool | None) -> bytes | None:
        """The dummy of `vr` as pydicom encodes it; None where it cannot be precomputed."""
        if little is None:
            return None
        key = (vr, little)
        if key not in self._dummies:
            self._dummies[key] = None if vr == "UI" else _encode(vr, self._dummy(0, None, vr),
                                                                little)
        return self._dummies[key]

    @staticmethod
    def _empty(vr: str):
        return [] if vr == "SQ" else None if vr in NON_TEXT_VRS else ""

    def _dummy_item(self, node: iod.Tree, old_items) -> Dataset:
        """One sequence item valid in itself, for D on a sequence (PS3.15 E.1.1).

        From the PS3.3 Types of the item's attributes here: Type 1 ones get a dummy, Type 2
        ones are present and empty, conditional ones (1C, 2C) the same where the old first
        item had them (its condition held, and the values that decide conditions are kept),
        Type 3 ones are left out. Nothing of the old item is kept but code strings (CS:
        enumerated values and defined terms such as Relationship Type and Value Type, which
        decide the item's other conditions) and SOP Class UIDs; other UIDs are remapped.
        """
        old = old_items[0] if old_items else None
        item = Dataset()
        for tag, (kind, children) in sorted(node.items()):
            present = old is not None and tag in old
            if kind not in iod.REQUIRED and kind not in iod.EMPTY_ALLOWED:
                continue
            if kind.endswith("C") and not present:
                continue
            entry = DicomDictionary.get(tag)
            if entry is None:
                continue
            vr = old[tag].VR if present else entry[0].split(" or ")[0]
            if vr == "SQ":
                value = ([self._dummy_item(children, old[tag].value if present else None)]
                         if kind in iod.REQUIRED else [])
            elif kind in iod.EMPTY_ALLOWED:
                value = self._empty(vr)
            elif vr == "CS" and present and old[tag].value not in (None, ""):
                value = old[tag].value
            elif vr == "UI":
                value = old[tag].value if present else None
                if not entry[4].endswith("ClassUID"):
                    value = self._map(value, self._uid)
                value = value or self._uid("")
            elif vr == "AT":
                value = 0
            else:
                value = dummy(vr)
            item.add(DataElement(tag, vr, value, validation_mode=config.IGNORE))
        return item

    def _dummy(self, tag: int, value, vr: str):
        if vr == "SQ":
            return [Dataset()]
        if vr == "UI":
            return self._map(value, self._uid) or self._uid("")
        kind = self._ids.get(tag)
        if kind is not None:
            return self._pseudonym(str(value or ""), kind[0], kind[1])
        return dummy(vr)

    def _pseudonym(self, value: str, kind: str, length: int) -> str:
        key = (value, kind, length)
        pseudonym = self._pseudonyms.get(key)
        if pseudonym is None:
            pseudonym = self.pseudonymizer.pseudonym(value, kind, length)
            if len(self._pseudonyms) >= CACHE_LIMIT:
                self._pseudonyms.clear()
            self._pseudonyms[key] = pseudonym
        return pseudonym

    def _clean(self, ds: Dataset, tag: int, elem, step: _Step, ctx: _Context,
               node: iod.Tree | None) -> bool:
        """Apply C; False when no cleaning rule fits and the basic action must be used."""
        vr = elem.VR
        if vr == "SQ":
            self._items(elem.value, ctx, node)  # cleaning a sequence is applying the table inside
            return True
        if step.column == DATE_COLUMN:
            if vr == "TM":
                return True  # a whole-day shift leaves the time of day as it was
            shift = shift_da if vr == "DA" else shift_dt if vr == "DT" else None
            if shift is None or elem.value in (None, ""):
                return shift is not None
            if ctx.days is None:
                ctx.days = self.pseudonymizer.date_shift_days(ctx.patient_id)
            shifted = self._map(elem.value, lambda v: shift(v, ctx.days))
            if shifted is None:
                return False
            elem.value = shifted
            ctx.result.dates_shifted = True
            return True
        if vr in TEXT_VRS and ctx.identifiers is not None:
            if elem.value in (None, ""):
                return True
            cleaned = ctx.identifiers.clean(str(elem.value))
            if cleaned is None:
                return False
            elem.value = cleaned
            return True
        return False

    @staticmethod
    def _map(value, function):
        """`function` over one value or each of several; None if any result is None."""
        if isinstance(value, MultiValue | list):
            mapped = [function(str(v)) for v in value]
            return None if None in mapped else mapped
        return function(str(value)) if value not in (None, "") else value

    def _file_meta(self, ds: Dataset, ctx: _Context) -> None:
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return
        uid = ds._dict.get(SOP_INSTANCE_UID)
        if isinstance(uid, RawDataElement) and uid.value is not None:
            # the file meta is explicit VR little endian; a UI value reads the same in any
            meta._dict[MEDIA_SOP_INSTANCE_UID] = RawDataElement(
                MEDIA_SOP_INSTANCE_UID, "UI", len(uid.value), uid.value, 0, False, True)
        elif uid is not None:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        drop = META_PRIVATE_TAGS
        if not self.options.retain_device_identity:
            drop += META_DEVICE_TAGS
        elements = meta._dict
        for tag in drop:
            if tag in elements:
                del elements[tag]
                ctx.result.counts["X"] += 1


@lru_cache(maxsize=4096)  # the tag comes from the file: bounded
def _repeater_vr(tag: int) -> str | None:
    """The VR of a repeating-group attribute (e.g. Overlay Description 60xx,0022 inside a
    sequence item, where the whole-group drop does not reach); None for any other tag."""
    try:
        return dictionary_VR(tag) if repeater_has_tag(tag) else None
    except KeyError:
        return None


def _encode(vr: str, value: object, little: bool) -> bytes | None:
    """`value` as pydicom writes it for `vr` (implicit VR, so the header is 8 bytes)."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = True, little
    try:
        write_data_element(buffer, DataElement(0x00090010, vr, value,
                                               validation_mode=config.IGNORE))
    except Exception:  # a dummy pydicom cannot write: let the element take its old path
        return None
    return buffer.getvalue()[8:]
