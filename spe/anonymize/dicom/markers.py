"""The attributes that say an object was de-identified, and how (PS3.15 E.1.1, CID 7050)."""

from __future__ import annotations

from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from spe.anonymize.dicom.options import BASIC_CODE, OPTION_COLUMNS

METHOD_NAME = "DICOM PS3.15 Annex E Basic Application Confidentiality Profile"


def mark(ds: Dataset, applied: list[str], dates: str) -> None:
    """Set the markers; `applied` are the Options fields that took effect."""
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
