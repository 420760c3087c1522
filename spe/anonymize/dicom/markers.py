"""The attributes that say an object was de-identified, and how (PS3.15 E.1.1, CID 7050)."""

from __future__ import annotations

from pydicom import config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from spe.anonymize.dicom.options import BASIC_CODE, OPTION_COLUMNS

METHOD_NAME = "DICOM PS3.15 Annex E Basic Application Confidentiality Profile"
# (applied options, dates, implicit VR, little endian) -> the markers, already encoded
_ENCODED: dict[tuple[tuple[str, ...], str, bool, bool], tuple[RawDataElement, ...]] = {}
_ENCODED_LIMIT = 256


def mark(ds: Dataset, applied: list[str], dates: str) -> None:
    """Set the markers; `applied` are the Options fields that took effect.

    A dataset read from a file gets them as elements already encoded in its own encoding
    (they are the same for every object with the same options), so neither this step nor
    writing the object encodes them again; reading them back decodes them as usual.
    """
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        _set(ds, applied, dates)
        return
    key = (tuple(applied), dates, implicit, little)
    encoded = _ENCODED.get(key)
    if encoded is None:
        encoded = _encode(applied, dates, implicit, little)
        if len(_ENCODED) >= _ENCODED_LIMIT:
            _ENCODED.clear()
        _ENCODED[key] = encoded
    elements = ds._dict
    for raw in encoded:  # immutable: sharing them between datasets is safe
        elements[raw.tag] = raw


def _encode(applied: list[str], dates: str, implicit: bool,
            little: bool) -> tuple[RawDataElement, ...]:
    """The markers written by pydicom in the given encoding and read back undecoded."""
    template = Dataset()
    _set(template, applied, dates)
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_dataset(buffer, template)
    buffer.seek(0)
    parsed = read_dataset(buffer, implicit, little)
    encoded = []
    for tag, raw in parsed._dict.items():
        if not isinstance(raw, RawDataElement):  # pragma: no cover - pydicom reads lazily
            raise TypeError(f"marker {tag} was not read back undecoded")
        encoded.append(raw._replace(VR=template[tag].VR))  # implicit VR reads leave it out
    return tuple(encoded)


def _set(ds: Dataset, applied: list[str], dates: str) -> None:
    codes = [BASIC_CODE] + [OPTION_COLUMNS[name][1:] for name in applied]
    ds.PatientIdentityRemoved = "YES"
    # LO is limited to 64 characters, so each option is one more value, not a longer one.
    ds.DeidentificationMethod = [METHOD_NAME] + [meaning for _, meaning in codes[1:]]
    items = []
    for value, meaning in codes:
        item = Dataset()
        # our own constants: validating them on every object is wasted time
        item.add(DataElement(0x00080100, "SH", value, validation_mode=config.IGNORE))
        item.add(DataElement(0x00080102, "SH", "DCM", validation_mode=config.IGNORE))
        item.add(DataElement(0x00080104, "LO", meaning, validation_mode=config.IGNORE))
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items
    ds.LongitudinalTemporalInformationModified = dates
