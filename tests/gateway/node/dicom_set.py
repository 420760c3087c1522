"""The DICOM test set shared by the node's source and index tests, written with pydicom.

Four patients, five studies, eleven series of MR, CT and CR images with 8x8 pixels, as
valid Part-10 files in a nested folder (see `make_dicom_set`); one patient's text is outside
Latin-1, so written in UTF-8. The UIDs are deterministic. The module-scoped fixture
`dicom_set` (in `conftest.py`) writes the set once per test module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SOP_CLASSES = {
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
}

# patient id, sex, birth date -> studies: (date, accession, description, series)
# series: (modality, body part, manufacturer, description, instances)
PATIENTS = {
    ("P001", "F", "19700501"): [
        ("20200102", "ACC-1", "MR brain", [
            ("MR", "HEAD", "Siemens", "T1 axial", 3),
            ("MR", "HEAD", "Siemens", "T2 axial", 2),
        ]),
        ("20210607", "ACC-2", "CT chest", [
            ("CT", "CHEST", "GE", "Chest 1mm", 3),
            ("CT", "CHEST", "GE", "Chest 5mm", 2),
            ("CR", "CHEST", "Agfa", "Scout", 1),
        ]),
    ],
    ("P002", "M", "19651111"): [
        ("20220304", "ACC-3", "Knee X-ray", [
            ("CR", "KNEE", "Fujifilm", "AP", 2),
            ("CR", "KNEE", "Fujifilm", "Lateral", 1),
        ]),
    ],
    ("P003", "O", ""): [
        ("20230809", "", "", [
            ("MR", "ABDOMEN", "Philips", "", 2),
            ("CT", "ABDOMEN", "Philips", "Portal venous", 2),
            ("CR", "ABDOMEN", "", "Overview", 1),
        ]),
    ],
    # Text outside Latin-1, so written as UTF-8 (ISO_IR 192): a PACS must not lose it.
    ("P004-Ж", "F", "19881224"): [
        ("20240115", "ACC-Ω", "Schädel ✓ Ωμέγα", [
            ("CT", "HEAD", "Šiemens Ωmega", "Kopf → axial", 2),
        ]),
    ],
}


def uid(*parts: object) -> str:
    """A deterministic UID, so the same test set has the same UIDs on every run."""
    return generate_uid(prefix="1.2.826.0.1.3680043.10.543.", entropy_srcs=[repr(parts)])


@dataclass
class DicomSet:
    root: Path
    files: list[Path]
    studies: dict[str, dict]  # study uid -> expected attributes, series and SOP UIDs

    def sops(self, study_uid: str) -> set[str]:
        return {sop for s in self.studies[study_uid]["series"].values() for sop in s["sops"]}


def _instance(patient: tuple[str, str, str], study: tuple, series: tuple, study_uid: str,
              series_uid: str, series_number: int, n: int) -> Dataset:
    modality, body_part, manufacturer, series_description, _ = series
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    meta.MediaStorageSOPInstanceUID = uid(series_uid, n)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    try:
        "".join([*patient, *study[:3], *series[:4]]).encode("latin-1")
        ds.SpecificCharacterSet = "ISO_IR 100"
    except UnicodeEncodeError:
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.AccessionNumber, ds.StudyDescription = study[:3]
    ds.StudyTime = "101500"
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = f"TEST^{patient[0]}"
    ds.PatientID, ds.PatientSex, ds.PatientBirthDate = patient
    ds.BodyPartExamined = body_part
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = n + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64, dtype=np.uint16) * (n + 1)).tobytes()
    return ds


def make_dicom_set(root: Path) -> DicomSet:
    """Write the test set under `root` in a mixed layout: nested folders, `.dcm`, `.DCM`
    and extension-less files; plus files the folder source must skip or ignore."""
    files: list[Path] = []
    studies: dict[str, dict] = {}
    for p_index, (patient, patient_studies) in enumerate(PATIENTS.items()):
        for s_index, study in enumerate(patient_studies):
            study_uid = uid(patient[0], s_index)
            expected = studies[study_uid] = {
                "patient_id": patient[0], "sex": patient[1],
                "birth": date(int(patient[2][:4]), int(patient[2][4:6]), int(patient[2][6:]))
                if patient[2] else None,
                "date": date(int(study[0][:4]), int(study[0][4:6]), int(study[0][6:])),
                "accession": study[1] or None, "description": study[2] or None,
                "series": {},
            }
            for number, series in enumerate(study[3], start=1):
                series_uid = uid(study_uid, number)
                sops = []
                for n in range(series[4]):
                    ds = _instance(patient, study, series, study_uid, series_uid, number, n)
                    if p_index == 0:  # deep nesting, .dcm
                        path = root / patient[0] / f"study{s_index}" / f"se{number}" / f"{n}.dcm"
                    elif p_index == 1:  # extension-less files, as on DICOM media
                        path = root / patient[0] / f"IM{number:02d}{n:02d}"
                    elif p_index == 2:  # flat, upper-case extension
                        path = root / f"{patient[0]}_{number}_{n}.DCM"
                    else:  # ASCII file names whatever the patient ID
                        path = root / f"patient{p_index}" / f"{s_index}-{number}-{n}.dcm"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    ds.save_as(path, enforce_file_format=True)
                    files.append(path)
                    sops.append(ds.SOPInstanceUID)
                expected["series"][series_uid] = {
                    "modality": series[0], "number": number, "body_part": series[1],
                    "manufacturer": series[2] or None, "description": series[3] or None,
                    "sops": sops,
                }
    return DicomSet(root, files, studies)
