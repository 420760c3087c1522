"""Apply PS3.15 Table E.1-1 with its options to a dataset, in place, at every nesting level.

Everything that can be decided from the options alone (the action per tag, which tags get
pseudonyms, which are identifying for descriptor cleaning) is decided once in
`Deidentifier.__init__`, so the per-element work is a dict lookup by tag int. Elements that
are kept are never converted from their raw form, which is where the speed comes from.

Burned-in pixel text is another step's job: pass it as `pixel_cleaner` (called before the
header is touched, so it can still read the names it must find); without one, objects that
say BurnedInAnnotation=YES come back with a warning and the Clean Pixel Data Option is not
claimed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pydicom import config
from pydicom.datadict import DicomDictionary, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from spe.anonymize.dicom import descriptors, table
from spe.anonymize.dicom.markers import mark
from spe.anonymize.dicom.options import COMBINED, Options, resolve
from spe.anonymize.dicom.private import private_to_remove
from spe.anonymize.dicom.values import MAX_LENGTH, TEXT_VRS, dummy, shift_da, shift_dt

PATIENT_ID = 0x00100020
SOP_INSTANCE_UID = 0x00080018
BURNED_IN = 0x00280301
DATE_COLUMN = "rtnLongModifDatesOpt"
# File meta AE titles name the sending device; the table does not list group 0002.
META_DEVICE_TAGS = (0x00020016, 0x00020017, 0x00020018)
META_PRIVATE_TAGS = (0x00020100, 0x00020102)
# VRs whose empty value is None rather than "" (numbers, bytes).
NON_TEXT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "OB", "OW", "OD",
                          "OF", "OL", "OV", "UN", "AT"})


class Pseudonymizer(Protocol):
    """What needs a key; `spe.anonymize.pseudonyms.PermitKey` implements it per permit."""

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


def _build_plan(columns: set[str]) -> dict[int, _Step]:
    plan = {}
    for tag, (basic, option_actions) in table.EXACT.items():
        action, column = resolve(basic, option_actions, columns)
        plan[tag] = _Step(action, column, COMBINED.get(basic, basic))
    return plan


def _id_kinds(plan: dict[int, _Step]) -> dict[int, tuple[str, int]]:
    """D on an identifier becomes a keyed pseudonym, so records still link (layer 2)."""
    kinds = {PATIENT_ID: ("patient", 16)}
    for tag, step in plan.items():
        keyword = keyword_for_tag(tag)
        vr = DicomDictionary.get(tag, ("",))[0]
        if step.action == "D" and vr in TEXT_VRS and keyword.endswith(("ID", "Identifier")):
            kinds.setdefault(tag, (keyword, min(MAX_LENGTH.get(vr, 64), 64)))
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
        self._plan = _build_plan(columns)
        self._masked = [(mask, value, _Step(*resolve(basic, opts, columns),
                                            COMBINED.get(basic, basic)))
                        for mask, value, basic, opts in table.MASKED]
        self._masked_high = frozenset(value >> 24 for _, value, _ in self._masked)
        self._retain_private = "rtnSafePrivOpt" in columns
        self._ids = _id_kinds(self._plan)
        untouched = {t for t, s in self._plan.items() if s.action == "K"}
        self._pn_tags = frozenset(t for t, v in DicomDictionary.items()
                                  if v[0] == "PN" and t not in self._plan)
        self._sq_tags = frozenset(t for t, v in DicomDictionary.items() if v[0] == "SQ")
        self._identifying = frozenset(
            t for t, s in self._plan.items()
            if t not in untouched and "cleanDescOpt" not in table.EXACT[t][1])
        self._text_cleaning = any(
            s.action == "C" and s.column != DATE_COLUMN for s in self._plan.values())

    def apply(self, ds: Dataset) -> DeidResult:
        result = DeidResult()
        patient = ds.get("PatientID")
        identifiers = None
        if self._text_cleaning:
            identifiers = descriptors.collect(ds, self._identifying,
                                              descriptors.Identifiers())
        ctx = _Context(result, str(patient or ""), identifiers)
        burned_in = ds.get("BurnedInAnnotation")
        pixels_cleaned = False
        if burned_in == "YES":
            if self.pixel_cleaner is not None:
                self.pixel_cleaner(ds)
                pixels_cleaned = True
            else:
                result.warnings.append("BurnedInAnnotation=YES: pixel data not cleaned")
        self._walk(ds, ctx)
        self._file_meta(ds, ctx)
        applied = [name for name in self.options.enabled()
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

    def _walk(self, ds: Dataset, ctx: _Context) -> None:
        plan, counts = self._plan, ctx.result.counts
        drop_private = None
        if self._retain_private:
            drop_private = private_to_remove(ds, self.safe_private)
        # Working on the element dict itself skips Tag() parsing, BaseTag's Python-level
        # __eq__ and the setters' hooks, which cost more than the profile's own work.
        elements = ds._dict
        for key, raw in list(elements.items()):
            tag = int(key)
            step = plan.get(tag)
            if step is None:
                if tag >> 16 & 1:
                    if drop_private is None or tag in drop_private:
                        del ds[key]  # through the Dataset: it caches private blocks
                        counts["X"] += 1
                    elif tag & 0xFFFF >= 0x1000 and raw.VR == "SQ":
                        self._items(ds[key].value, ctx)
                    continue
                if tag >> 24 in self._masked_high:
                    step = self._masked_step(tag)
                if step is None:
                    self._unlisted(ds, key, raw.VR, ctx)
                    continue
            self._act(ds, key, raw.VR, step.action, step, ctx)

    def _masked_step(self, tag: int) -> _Step | None:
        for mask, value, step in self._masked:
            if tag & mask == value:
                return step
        return None

    def _unlisted(self, ds: Dataset, key, vr: str | None, ctx: _Context) -> None:
        if key in self._pn_tags or (vr == "PN" and key not in DicomDictionary):
            del ds._dict[key]  # names never survive, listed or not
            ctx.result.counts["X"] += 1
        elif key in self._sq_tags or (vr == "SQ" and key not in DicomDictionary):
            self._items(ds[key].value, ctx)

    def _items(self, items, ctx: _Context) -> None:
        for item in items or ():
            self._walk(item, ctx)

    def _act(self, ds: Dataset, tag, vr: str | None, action: str, step: _Step,
             ctx: _Context) -> None:
        counts = ctx.result.counts
        if action == "X":
            del ds._dict[tag]
            counts["X"] += 1
            return
        if vr in (None, "UN") or " or " in vr:  # implicit VR or ambiguous: let pydicom decide
            vr = ds[tag].VR
        if action == "U*":
            action = "U" if vr in ("UI", "SQ") else "Z"
        if action in ("Z", "D") and vr != "UI" and tag not in self._ids:
            # the old value is not needed: skip decoding it
            value = self._empty(vr) if action == "Z" else [Dataset()] if vr == "SQ" else dummy(vr)
            ds._dict[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
            counts[action] += 1
            return
        if action == "U" and vr == "UI":
            raw = ds._dict[tag]
            if isinstance(raw, RawDataElement) and raw.value is not None:
                # decode the bytes ourselves: pydicom's UID parsing and checks are the cost
                old = raw.value.decode("ascii", "replace").rstrip("\0 ").split("\\")
                new = [self.pseudonymizer.uid(v.strip()) if v.strip() else "" for v in old]
                value = new[0] if len(new) == 1 else new
                ds._dict[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
                counts["U"] += 1
                return
        elem = ds[tag]
        vr = elem.VR
        if action == "K":
            if vr == "SQ":
                self._items(elem.value, ctx)
        elif action == "Z":
            elem.value = [] if vr == "SQ" else elem.empty_value
        elif action == "U":
            if vr == "SQ":
                self._items(elem.value, ctx)
            elif vr == "UI":
                elem.value = self._map(elem.value, self.pseudonymizer.uid)
            else:
                elem.value = elem.empty_value
                action = "Z"
        elif action == "D":
            elem.value = self._dummy(tag, elem.value, vr)
        elif not self._clean(ds, tag, elem, step, ctx):
            self._act(ds, tag, vr, step.fallback, step, ctx)
            return
        counts[action] += 1

    @staticmethod
    def _empty(vr: str):
        return [] if vr == "SQ" else None if vr in NON_TEXT_VRS else ""

    def _dummy(self, tag: int, value, vr: str):
        if vr == "SQ":
            return [Dataset()]
        if vr == "UI":
            return self._map(value, self.pseudonymizer.uid) or self.pseudonymizer.uid("")
        kind = self._ids.get(tag)
        if kind is not None:
            return self.pseudonymizer.pseudonym(str(value or ""), kind[0], kind[1])
        return dummy(vr)

    def _clean(self, ds: Dataset, tag: int, elem, step: _Step, ctx: _Context) -> bool:
        """Apply C; False when no cleaning rule fits and the basic action must be used."""
        vr = elem.VR
        if vr == "SQ":
            self._items(elem.value, ctx)  # cleaning a sequence is applying the table inside
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
        if SOP_INSTANCE_UID in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        drop = META_PRIVATE_TAGS
        if not self.options.retain_device_identity:
            drop += META_DEVICE_TAGS
        for tag in drop:
            if tag in meta:
                del meta[tag]
                ctx.result.counts["X"] += 1
