"""Burned-in annotation: mask it where the region is known, otherwise refuse the image.

`PixelCleaner` is the `pixel_cleaner` a `Deidentifier` takes. It is called before the header
is de-identified, because both the decision and the rule lookup read header attributes.

Whether an image may carry burned-in text:

* BurnedInAnnotation "YES": it does.
* BurnedInAnnotation "NO": trusted; the image is left alone. This relies on the modality's
  own flag, which PS3.15 E.3.1 allows (the Clean Pixel Data Option is about the text the
  object says it has).
* BurnedInAnnotation absent or empty: it may, when the Modality is in `BURN_IN_MODALITIES`
  or the SOP Class is a Secondary Capture class; otherwise it is treated as "NO".
* Any other value: it may (an unreadable flag is not a "NO").

When it may, the first `RegionRule` whose `match` holds gives the rectangles to set to 0 in
every frame and sample; BurnedInAnnotation then becomes "NO". When no rule matches, or the
pixel data cannot be decoded, `BurnedInExcluded` is raised: the image must not be released,
and the exception's message is the reason reports show. Nothing passes through silently.

Rules come from `data/burned-in-regions.json` unless given: a JSON list of
`{"name", "comment", "match": {keyword: value, ...}, "rows"?, "columns"?,
"regions": [[x0, y0, x1, y1], ...]}`. `match` compares the attribute's string value for
equality, looking in the dataset and then its file meta (so ImplementationVersionName
works); `rows` and `columns` must equal the image's when given. In a region x is the column,
y the row, the ends are exclusive and are clamped to the image.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder, pack_bits
from pydicom.uid import (
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)

DEFAULT_RULES = Path(__file__).parent / "data" / "burned-in-regions.json"

# Modalities whose images, when they do not say otherwise, are assumed to carry burned-in
# text: their pixels are usually a capture of what a screen or video output showed, with
# the device's patient/exam banner rendered into the frame rather than kept in the header.
#   US, IVUS: ultrasound frames are video captures of the scanner display.
#   XA, RF:   angiography and fluoroscopy frames often come from the video chain too.
#   ES, XC, GM, OP: endoscopy, external-camera, microscopy and ophthalmic photographs and
#             videos, often with a text overlay from the capture device.
#   SM:       slide microscopy includes label and overview images showing the slide label.
#   SC, OT:   secondary capture and "other": screenshots and scanned documents.
# CT, MR, PT, NM, CR, DX, MG and the like keep their text in the header, so for them an
# absent flag is taken as "NO"; their burned-in images must say YES (or the caller passes a
# wider `modalities` set to PixelCleaner). Wrongly excluding an image costs a re-run;
# wrongly releasing one leaks.
BURN_IN_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "OP", "SM",
                                "SC", "OT"})

SECONDARY_CAPTURE_CLASSES = frozenset({
    SecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
})

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)  # Float / Double Float Pixel Data


class BurnedInExcluded(Exception):
    """The image may show burned-in text that cannot be removed: it must not be released.

    The message says why, in terms a report can show (no patient data in it).
    """


@dataclass(frozen=True)
class RegionRule:
    """Where one kind of image carries its burned-in text."""

    name: str
    match: Mapping[str, str]
    regions: tuple[tuple[int, int, int, int], ...]
    rows: int | None = None
    columns: int | None = None
    comment: str = ""

    def __post_init__(self) -> None:
        if not self.match:
            raise ValueError(f"rule {self.name!r}: an empty match would fit every image")
        unknown = [keyword for keyword in self.match if tag_for_keyword(keyword) is None]
        if unknown:
            raise ValueError(f"rule {self.name!r}: {unknown} are not DICOM keywords")
        if not self.regions:
            raise ValueError(f"rule {self.name!r}: no regions")
        for region in self.regions:
            if (len(region) != 4 or not all(isinstance(v, int) and v >= 0 for v in region)
                    or region[0] >= region[2] or region[1] >= region[3]):
                raise ValueError(f"rule {self.name!r}: region {list(region)} is not "
                                 "[x0, y0, x1, y1] with 0 <= x0 < x1 and 0 <= y0 < y1")
        # a plain dict whatever mapping was given, so that rules pickle and compare alike
        object.__setattr__(self, "match", dict(self.match))

    @classmethod
    def from_dict(cls, data: Mapping) -> RegionRule:
        unknown = set(data) - {"name", "comment", "match", "rows", "columns", "regions"}
        if unknown:
            raise ValueError(f"rule {data.get('name')!r}: unknown fields {sorted(unknown)}")
        return cls(name=str(data["name"]),
                   match={str(k): str(v) for k, v in data["match"].items()},
                   regions=tuple(tuple(r) for r in data["regions"]),
                   rows=data.get("rows"), columns=data.get("columns"),
                   comment=str(data.get("comment", "")))

    def matches(self, ds: Dataset) -> bool:
        if self.rows is not None and ds.get("Rows") != self.rows:
            return False
        if self.columns is not None and ds.get("Columns") != self.columns:
            return False
        return all(_text(ds, keyword) == value for keyword, value in self.match.items())


def load_rules(path: Path | str = DEFAULT_RULES) -> list[RegionRule]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rules")
    return [RegionRule.from_dict(item) for item in data]


def _text(ds: Dataset, keyword: str) -> str | None:
    """The attribute's value as one string, from the dataset or else its file meta."""
    for source in (ds, getattr(ds, "file_meta", None)):
        if source is not None and keyword in source:
            value = source[keyword].value
            if value is None:
                return ""
            if isinstance(value, MultiValue | list):
                return "\\".join(str(v) for v in value)
            return str(value)
    return None


def burned_in_reason(ds: Dataset,
                     modalities: Iterable[str] = BURN_IN_MODALITIES) -> str | None:
    """Why the image may carry burned-in text, or None if it is taken not to."""
    flag = str(ds.get("BurnedInAnnotation") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation=YES"
    if flag == "NO":
        return None  # the modality's own statement, trusted (PS3.15 E.3.1)
    if flag:
        return f"BurnedInAnnotation={flag!r} is neither YES nor NO"
    modality = str(ds.get("Modality") or "")
    if modality in modalities:
        return f"BurnedInAnnotation absent and modality {modality} often burns in text"
    if str(ds.get("SOPClassUID") or "") in SECONDARY_CAPTURE_CLASSES:
        return "BurnedInAnnotation absent on a Secondary Capture image"
    return None


def describe(ds: Dataset) -> str:
    def value(keyword: str) -> str:
        text = _text(ds, keyword)
        return repr(text) if text else "(none)"

    return (f"modality {value('Modality')}, manufacturer {value('Manufacturer')}, "
            f"model {value('ManufacturerModelName')}, "
            f"{ds.get('Rows', '?')}x{ds.get('Columns', '?')} (rows x columns)")


class PixelCleaner:
    """Masks known burned-in regions; raises `BurnedInExcluded` for the rest.

    Picklable (rules are plain frozen dataclasses), so worker processes can get a copy.
    """

    def __init__(self, regions: list[RegionRule] | None = None,
                 modalities: Iterable[str] = BURN_IN_MODALITIES) -> None:
        self.regions = tuple(load_rules() if regions is None else regions)
        self.modalities = frozenset(modalities)

    def rule_for(self, ds: Dataset) -> RegionRule | None:
        return next((rule for rule in self.regions if rule.matches(ds)), None)

    def __call__(self, ds: Dataset) -> None:
        has_float = any(tag in ds for tag in FLOAT_PIXEL_DATA)
        if PIXEL_DATA not in ds and not has_float:
            return
        reason = burned_in_reason(ds, self.modalities)
        if reason is None:
            return
        if PIXEL_DATA not in ds:
            raise BurnedInExcluded(f"{reason}: {describe(ds)}; float pixel data is not masked")
        rule = self.rule_for(ds)
        if rule is None:
            raise BurnedInExcluded(f"{reason}: {describe(ds)}; no masking region is known "
                                   "for this image, so it is excluded")
        mask(ds, rule.regions, f"{reason}: {describe(ds)}; rule {rule.name!r}")
        ds.BurnedInAnnotation = "NO"


def mask(ds: Dataset, regions: Iterable[tuple[int, int, int, int]], context: str = "") -> None:
    """Set `regions` to 0 in every frame and sample; leave the pixel data native."""
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is None:
        raise BurnedInExcluded(f"{context}; no Transfer Syntax UID to decode the pixels with")
    if syntax.is_compressed:
        try:
            # keep the SOP Instance UID: it is the de-identifier's to replace, consistently
            ds.decompress(generate_instance_uid=False)
        except Exception as error:  # missing plugin, corrupt stream: either way, not cleaned
            raise BurnedInExcluded(f"{context}; the {syntax.name} pixel data cannot be "
                                   f"decoded here ({type(error).__name__}: "
                                   f"{' '.join(str(error).split())})") from error
        syntax = ds.file_meta.TransferSyntaxUID
    try:
        arr, meta = get_decoder(syntax).as_array(ds, as_rgb=False)
    except Exception as error:
        raise BurnedInExcluded(f"{context}; the pixel data cannot be decoded "
                               f"({type(error).__name__}: {error})") from error
    if not (arr.flags.writeable and arr.flags.c_contiguous):
        arr = arr.copy()
    rows, columns = int(meta["rows"]), int(meta["columns"])
    samples = int(meta["samples_per_pixel"])
    frames = arr.reshape(-1, rows, columns, samples)  # a view: writes go to `arr`
    for x0, y0, x1, y1 in regions:
        frames[:, y0:y1, x0:x1, :] = 0  # slicing clamps the ends to the image
    bits = int(meta["bits_allocated"])
    if bits == 1:
        data = pack_bits(arr)
    else:
        if arr.dtype.itemsize * 8 != bits:
            raise BurnedInExcluded(f"{context}; decoded {arr.dtype} for {bits} bits allocated")
        order = "<" if syntax.is_little_endian else ">"
        data = arr.astype(arr.dtype.newbyteorder(order), copy=False).tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.PixelData = data
    # the decoder's view of what the array holds: interleaved samples, YBR_FULL_422 upsampled
    ds.PhotometricInterpretation = meta["photometric_interpretation"]
    if samples > 1:
        ds.PlanarConfiguration = 0
