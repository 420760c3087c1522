"""Encode a de-identified object as a Part-10 file: the bytes `save_as(enforce_file_format=True)`
gives, written faster.

After the profile most of an object read from a file is still undecoded (`RawDataElement`s in
the file's own encoding), and pydicom's writer spends most of its time on per-element
bookkeeping around copying those bytes (a buffer, a context manager and several property
reads per element, a deep copy and validation of the file meta). `part10_bytes` copies them
itself, with the header pydicom would write, and hands every other element (decoded values,
sequences, Pixel Data) to pydicom's own `write_data_element` with the same arguments
`dcmwrite` would use, so the output is the same byte for byte. Whatever it does not cover
(a file meta that `dcmwrite` would complete or correct, a change of transfer syntax or
character set, Deflate, private transfer syntaxes) goes to `dcmwrite` unchanged; a test
compares both writers over many encodings and IODs.
"""

from __future__ import annotations

import re
import struct
from io import BytesIO
from typing import Any

from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element
from pydicom.tag import tag_in_exception
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

PIXEL_DATA = 0x7FE00010
TRANSFER_SYNTAX = 0x00020010
GROUP_LENGTH = 0x00020000
# Present and not empty, or `dcmwrite` (validate_file_meta) would add or refuse them.
_META_DECODED = {0x00020001: "OB", 0x00020002: "UI", 0x00020003: "UI", TRANSFER_SYNTAX: "UI",
                 0x00020012: "UI"}
_META_PRESENT = (0x00020013,)
_SOP_UIDS = {0x00020002: 0x00080016, 0x00020003: 0x00080018}  # meta tag: dataset tag
_UID_BYTES = re.compile(rb"[0-9][0-9.]*")
_LONG = frozenset(EXPLICIT_VR_LENGTH_32)
_VR_BYTES = {vr.value: vr.value.encode("ascii") for vr in STANDARD_VR}
_DELIMITER = {True: struct.pack("<HHL", 0xFFFE, 0xE0DD, 0),
              False: struct.pack(">HHL", 0xFFFE, 0xE0DD, 0)}
_IMPLICIT = struct.Struct("<HHL")
_EXPLICIT_SHORT = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
_EXPLICIT_LONG = {True: struct.Struct("<HH2s2xL"), False: struct.Struct(">HH2s2xL")}
_GROUP_LENGTH = struct.Struct("<HH2sHL")


def part10_bytes(ds: Dataset) -> bytes:
    """The file `ds.save_as(path, enforce_file_format=True)` writes, as bytes."""
    try:
        syntax = _plan(ds)
    except Exception:  # let dcmwrite fail (or not) in its own words
        syntax = None
    if syntax is None:
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    for tag in _SOP_UIDS.values():
        if tag in ds._dict and not _canonical(ds._dict[tag], "UI"):
            ds[tag]  # noqa: B018 - decoded and re-encoded, as dcmwrite's ds.get() does
    pixels = ds._dict.get(PIXEL_DATA)
    native = _native_pixels(pixels, syntax)
    if pixels is not None and not native:
        # as dcmwrite: encapsulated Pixel Data has undefined length, native a defined one
        ds[PIXEL_DATA].is_undefined_length = syntax.is_compressed
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = implicit, little
    out.write(getattr(ds, "preamble", None) or b"\0" * 128)
    out.write(b"DICM")
    out.write(_meta_bytes(ds.file_meta))
    _write_elements(out, ds, ds.get("SpecificCharacterSet", default_encoding),
                    raw_pixels=native)
    return out.getvalue()


def _native_pixels(elem: Any, syntax: UID) -> bool:
    """True if `elem` is raw native Pixel Data that decoding would leave as it is: dcmwrite
    decodes it to set its length defined, and writes the same bytes (an even OB or OW
    value; in implicit VR the VR pydicom would choose is not written)."""
    return (elem.__class__ is RawDataElement and not syntax.is_compressed
            and elem.value.__class__ is bytes and not elem.is_buffered
            and elem.length != 0xFFFFFFFF and len(elem.value) % 2 == 0
            and (elem.VR in ("OB", "OW") or (elem.VR is None and syntax.is_implicit_VR)))


def _plan(ds: Dataset) -> UID | None:
    """The transfer syntax to write `ds` in, if `dcmwrite` would neither complete nor
    correct its file meta nor re-encode its elements; None otherwise."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or any(tag >> 16 in (0, 2) for tag in ds._dict):
        return None
    preamble = getattr(ds, "preamble", None)
    if preamble is not None and len(preamble) != 128:
        return None
    elements = meta._dict
    if any(tag >> 16 != 2 for tag in elements) or any(t not in elements for t in _META_PRESENT):
        return None
    # dcmwrite reads these (decoding them) in its copy of the file meta: written as they
    # are only where decoding and encoding them again gives the same bytes
    for tag, vr in _META_DECODED.items():
        elem = elements.get(tag)
        if elem is None or not _canonical(elem, vr):
            return None
    group_length = elements.get(GROUP_LENGTH)
    if group_length is not None and group_length.VR != "UL":
        return None
    if meta.original_encoding != (False, True) \
            or meta.original_character_set != meta._character_set:
        return None
    for meta_tag, ds_tag in _SOP_UIDS.items():
        theirs = ds._dict.get(ds_tag)
        if theirs is not None and (_uid_text(theirs) is None
                                   or _uid_text(theirs) != _uid_text(elements[meta_tag])):
            return None  # dcmwrite may put the dataset's UID into the meta: it decides
    syntax = UID(_uid_text(elements[TRANSFER_SYNTAX]))
    if syntax.is_private or not syntax.is_transfer_syntax \
            or syntax == DeflatedExplicitVRLittleEndian:
        return None
    if (syntax.is_implicit_VR, syntax.is_little_endian) != ds.original_encoding \
            or ds.original_character_set != ds._character_set:
        return None  # dcmwrite re-encodes every element here
    return syntax


def _canonical(elem: Any, vr: str) -> bool:
    """True if `elem` is not empty and pydicom writes it the same whether it is decoded
    first or not: decoded already, or raw and a UI value of digits and dots padded as
    pydicom pads it, or an even OB value."""
    if not isinstance(elem, RawDataElement):
        return not elem.is_empty
    if elem.VR not in (vr, None) or not elem.value:
        return False
    value = elem.value
    if vr == "OB":
        return len(value) % 2 == 0
    text = value[:-1] if value.endswith(b"\0") else value
    return _UID_BYTES.fullmatch(text) is not None and len(text) + len(text) % 2 == len(value)


def _uid_text(elem: Any) -> str | None:
    """The one UID `elem` holds as pydicom decodes it; None if that is not plain."""
    if isinstance(elem, RawDataElement):
        if not _canonical(elem, "UI"):
            return None
        return elem.value.rstrip(b"\0").decode("ascii")
    return elem.value if isinstance(elem.value, str) else None


def _meta_bytes(meta: Dataset) -> bytes | None:
    """The file meta group as `write_file_meta_info` writes it, its group length first."""
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = False, True
    _write_elements(out, meta, default_encoding, skip=GROUP_LENGTH)
    rest = out.getvalue()
    return _GROUP_LENGTH.pack(0x0002, 0x0000, b"UL", 4, len(rest)) + rest


def _write_elements(out: DicomBytesIO, ds: Dataset, encodings: Any,
                    skip: int | None = None, raw_pixels: bool = False) -> None:
    """The elements of `ds` in tag order as `write_dataset` writes them."""
    implicit, little = out.is_implicit_VR, out.is_little_endian
    short, long = _EXPLICIT_SHORT[little], _EXPLICIT_LONG[little]
    write, elements = out.write, ds._dict
    # keys are BaseTags, whose comparisons are Python code: sort and compare them as ints
    for key in sorted(elements, key=int):
        tag = int(key)
        if tag == skip or (tag & 0xFFFF == 0 and tag >> 16 > 6):
            continue  # retired group lengths are not written (PS3.5 7.2)
        elem = elements[key]
        if elem.__class__ is RawDataElement:
            value, vr = elem.value, elem.VR
            if value.__class__ is bytes and not elem.is_buffered \
                    and (tag != PIXEL_DATA or raw_pixels):
                undefined = elem.length == 0xFFFFFFFF
                length = 0xFFFFFFFF if undefined else len(value)
                if implicit:
                    write(_IMPLICIT.pack(tag >> 16, tag & 0xFFFF, length))
                elif vr in _LONG:
                    write(long.pack(tag >> 16, tag & 0xFFFF, _VR_BYTES[vr], length))
                elif vr in _VR_BYTES and length <= 0xFFFF:
                    write(short.pack(tag >> 16, tag & 0xFFFF, _VR_BYTES[vr], length))
                else:  # an error, a change to UN or an odd header: pydicom's own way
                    with tag_in_exception(key):
                        write_data_element(out, elem, encodings)
                    continue
                write(value)
                if undefined:
                    write(_DELIMITER[little])
                continue
        with tag_in_exception(key):
            write_data_element(out, ds.get_item(key), encodings)
