"""The imaging catalogue: exam types, their series, and what each modality's images look like."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom import uid as dicom_uid

from spe.synth.codes import Code, sct


@dataclass(frozen=True)
class SeriesDef:
    description: str
    modality: str | None = None  # None: the device's own modality (CR or DX for X-ray)
    extra: dict[str, str] = field(default_factory=dict)  # ViewPosition, ImageLaterality ...


@dataclass(frozen=True)
class ExamDef:
    key: str
    device_kind: str  # which scanner of the site's fleet does it: MR CT PET XR MG US
    body_part: str
    procedure: Code
    description: str
    series: tuple[SeriesDef, ...]
    min_series: int = 2
    max_series: int = 4
    instances: tuple[int, int] = (2, 4)


def _s(*descriptions: str, modality: str | None = None) -> tuple[SeriesDef, ...]:
    return tuple(SeriesDef(d, modality) for d in descriptions)


MR_BRAIN_CODE = sct("816077007", "Magnetic resonance imaging of brain")
PET_CODE = sct("82918005", "Positron emission tomography")

# The series lists are in acquisition order; an exam takes the first n of them, so the
# first two carry every modality the exam needs (PET/CT keeps its CT and PT series).
EXAMS: dict[str, ExamDef] = {e.key: e for e in (
    ExamDef("MR_BRAIN", "MR", "BRAIN", MR_BRAIN_CODE, "MR BRAIN W/WO CONTRAST",
            _s("T1 MPRAGE SAG", "T2 FLAIR AX", "DWI B1000 AX", "T1 POST GD AX")),
    ExamDef("MR_SPINE", "MR", "CSPINE", sct("241645008", "Magnetic resonance imaging of spine"),
            "MR CERVICAL SPINE", _s("T2 TSE SAG", "T1 TSE SAG", "STIR SAG", "T2 TSE AX")),
    ExamDef("MR_BREAST", "MR", "BREAST",
            sct("241615005", "Magnetic resonance imaging of breast"), "MR BREAST BILATERAL",
            tuple(SeriesDef(d, extra={"ImageLaterality": "B"})  # both breasts in each image
                  for d in ("T2 TSE AX", "DYN T1 FS AX", "DWI AX", "SUBTRACTION AX"))),
    ExamDef("CT_HEAD", "CT", "HEAD", sct("303653007", "Computed tomography of head"),
            "CT HEAD WITHOUT CONTRAST",
            _s("HEAD 5mm BRAIN", "HEAD 1mm BONE", "CTA CIRCLE OF WILLIS", "PERFUSION CBF")),
    ExamDef("CT_CHEST", "CT", "CHEST", sct("169069000", "Computed tomography of chest"),
            "CT THORAX WITH CONTRAST",
            _s("CHEST 1mm LUNG", "CHEST 3mm MEDIASTINUM", "CHEST 10mm MIP", "CHEST CORONAL")),
    ExamDef("PET_CT", "PET", "WHOLEBODY", PET_CODE, "PET-CT FDG WHOLE BODY",
            (SeriesDef("CT AC WHOLE BODY", "CT"), SeriesDef("PET WB AC", "PT"),
             SeriesDef("PET WB NAC", "PT"), SeriesDef("CT DIAGNOSTIC WB", "CT"))),
    ExamDef("PET_BRAIN", "PET", "BRAIN", PET_CODE, "PET-CT FDG BRAIN",
            (SeriesDef("CT AC BRAIN", "CT"), SeriesDef("PET BRAIN 3D AC", "PT"),
             SeriesDef("PET BRAIN NAC", "PT"))),
    ExamDef("CXR", "XR", "CHEST", sct("399208008", "Plain X-ray of chest"), "XR CHEST 2 VIEWS",
            (SeriesDef("CHEST PA", extra={"ViewPosition": "PA"}),
             SeriesDef("CHEST LAT", extra={"ViewPosition": "LL"}),
             SeriesDef("CHEST AP SUPINE", extra={"ViewPosition": "AP"})),
            max_series=3, instances=(1, 2)),
    ExamDef("MG", "MG", "BREAST", sct("71651007", "Mammography"), "MAMMOGRAPHY BILATERAL",
            tuple(SeriesDef(f"{side} {view}", extra={"ImageLaterality": side[0],
                                                     "ViewPosition": view})
                  for side, view in (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))),
            instances=(1, 2)),
    ExamDef("US_BREAST", "US", "BREAST", sct("16310003", "Ultrasonography"), "US BREAST",
            (SeriesDef("RIGHT BREAST", extra={"Laterality": "R"}),
             SeriesDef("LEFT BREAST", extra={"Laterality": "L"}), SeriesDef("AXILLA"))),
    ExamDef("US_ABD", "US", "ABDOMEN", sct("45036003", "Ultrasonography of abdomen"),
            "US ABDOMEN COMPLETE", _s("LIVER", "KIDNEYS", "GALLBLADDER", "SPLEEN"),
            instances=(1, 3)),
    ExamDef("ECHO", "US", "HEART", sct("40701008", "Echocardiography"), "ECHO TRANSTHORACIC",
            _s("PLAX", "A4C", "A2C", "SAX"), instances=(1, 3)),
)}

# Exams of patients seen for something outside the catalogue (trauma, pain, screening).
INCIDENTAL_EXAMS = ("CXR", "US_ABD", "CT_HEAD", "MR_SPINE")


@dataclass(frozen=True)
class ModalityDef:
    sop_class: str
    rows: int
    columns: int
    bits_stored: int
    signed: bool = False
    cross_sectional: bool = True  # has slices: position, orientation, slice location
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")


MODALITIES: dict[str, ModalityDef] = {
    "MR": ModalityDef(dicom_uid.MRImageStorage, 32, 32, 12),
    "CT": ModalityDef(dicom_uid.CTImageStorage, 32, 32, 16, signed=True),
    "PT": ModalityDef(dicom_uid.PositronEmissionTomographyImageStorage, 32, 32, 16),
    "CR": ModalityDef(dicom_uid.ComputedRadiographyImageStorage, 40, 32, 12,
                      cross_sectional=False, image_type=("ORIGINAL", "PRIMARY")),
    "DX": ModalityDef(dicom_uid.DigitalXRayImageStorageForPresentation, 40, 32, 12,
                      cross_sectional=False, image_type=("ORIGINAL", "PRIMARY")),
    "MG": ModalityDef(dicom_uid.DigitalMammographyXRayImageStorageForPresentation, 48, 32, 12,
                      cross_sectional=False, image_type=("ORIGINAL", "PRIMARY")),
    # Ultrasound is 8 bits per sample, as the scanners write it.
    "US": ModalityDef(dicom_uid.UltrasoundImageStorage, 24, 32, 8, cross_sectional=False,
                      image_type=("ORIGINAL", "PRIMARY", "ABDOMINAL")),
}
