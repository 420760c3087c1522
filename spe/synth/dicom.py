"""A planned study as DICOM Part 10 files, with identifying data where real scanners put it.

The anonymiser is tested against these files, so the headers carry what real ones carry:
patient name, ids (with Other Patient IDs and issuers), birth date, age, size, weight,
address and phone; accession number and request ids (also inside Request Attributes
Sequence); referring, reading, performing and operating people; institution, department,
address and station; dates, times and the UTC offset; free-text comments that name the
patient or staff; a private block (group 0x0009, creator "SPE SYNTH") repeating some of it,
with the UID of the patient's previous study. Some ultrasound and X-ray images say
BurnedInAnnotation=YES, and their top rows really do hold the patient's name as pixel
values (one character code per pixel), so a pixel-cleaning step can be checked. What the
rest of the pixels show (the patient's anatomy, the scanner's and site's effects) is
spe/synth/pixels.py's.

Each object is also valid against its own IOD (PS3.3 Annex A: MR, CT, PET, CR, Digital X-Ray
and Digital Mammography For Presentation, Ultrasound): David Clunie's dciodvfy reports no
error on it and dcentvfy none on a study (tests/conformance/test_dciodvfy_synth.py). What
the IODs require beyond the identifying data is coded or numeric (view and anatomy codes,
pixel intensity relationship, PET series and isotope attributes), so it adds nothing the
confidentiality profile would have to remove. The previous study's UID sits in the private
block rather than in Referenced Study Sequence, whose Referenced SOP Instance UID points to
no instance of the set (dcentvfy reports such a reference as an error).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code as SRCode
from pydicom.uid import ExplicitVRLittleEndian

from spe.synth import clock
from spe.synth import pixels as pixels_model
from spe.synth.codes import Code
from spe.synth.exams import MODALITIES, ModalityDef
from spe.synth.records import PatientRecord, SeriesRecord, StudyRecord
from spe.synth.sites import Site
from spe.synth.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, instance_uid

PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "SPE SYNTH"
ANNOTATION_ROWS = 4  # the band at the top of a burned-in image that holds the text
SLICE_MM = 5.0
LO_MAX = 64  # characters of a Long String (PS3.5 Table 6.2-1)
# Body parts whose series must say which side (General Series Laterality, PS3.3 C.7.3.1).
PAIRED_BODY_PARTS = frozenset({"BREAST"})
# Patient Orientation (0020,0020) of a projection image, row direction then column
# direction (PS3.3 C.7.6.1.1.1), as the image is hung: a frontal chest as if facing the
# patient, a lateral facing left; mammograms with the chest wall on the side of the breast.
PROJECTION_ORIENTATION = {"PA": ["L", "F"], "AP": ["L", "F"], "LL": ["P", "F"]}
MAMMOGRAM_ORIENTATION = {("R", "CC"): ["P", "L"], ("L", "CC"): ["A", "R"],
                         ("R", "MLO"): ["P", "FL"], ("L", "MLO"): ["A", "FR"]}
# View Code Sequence (0054,0220): CID 4010 DX View, CID 4014 View for Mammography.
VIEW_CODES: dict[str, SRCode] = {
    "PA": codes.cid4010.PosteroAnterior, "AP": codes.cid4010.AnteroPosterior,
    "LL": codes.cid4010.LeftLateral, "CC": codes.cid4014.CranioCaudal,
    "MLO": codes.cid4014.MedioLateralObliqueProjection,
}
# Anatomic Region Sequence (0008,2218) of the projection exams, CID 4009 DX Anatomy Imaged.
ANATOMIC_REGIONS: dict[str, SRCode] = {"CHEST": codes.cid4009.Chest,
                                       "BREAST": codes.cid4009.Breast}
# Whole seconds: written "6586.2", it would hold "86.2", a plausible Patient's Weight, which
# leak checks that look for removed values inside kept ones would then report.
F18_HALF_LIFE_S = "6586"
# Injected FDG activity in Bq: a fixed protocol dose, not one scaled by the patient's
# weight, which would carry the weight past a profile that removes Patient's Weight.
FDG_DOSE_BQ = {"WHOLEBODY": "350000000", "BRAIN": "200000000"}
PET_FRAME_MS = {"WHOLEBODY": "120000", "BRAIN": "600000"}  # per bed position


def instance_path(root: Path, record: PatientRecord, study: StudyRecord,
                  series: SeriesRecord, number: int) -> Path:
    """Where a PACS export would put it: patient / study / series / image."""
    return root / record.mrn / study.accession / f"{series.number:03d}" / f"{number:04d}.dcm"


def write_study(root: Path, site: Site, record: PatientRecord, study: StudyRecord) -> int:
    """Write every instance of `study`; return how many files were written."""
    written = 0
    for series in study.series:
        folder = instance_path(root, record, study, series, 1).parent
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(1, series.instances + 1):
            ds = instance_dataset(site, record, study, series, number)
            ds.save_as(folder / f"{number:04d}.dcm", enforce_file_format=True)
            written += 1
    return written


def instance_dataset(site: Site, record: PatientRecord, study: StudyRecord,
                     series: SeriesRecord, number: int) -> Dataset:
    modality = MODALITIES[series.modality]
    sop_uid = instance_uid(series.uid, number)
    offset = site.template.utc_offset_hours
    person = record.person
    device = study.device

    ds = Dataset()
    ds.file_meta = _file_meta(modality.sop_class, sop_uid, device.station_name)
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names are not all ASCII
    ds.ImageType = list(modality.image_type)
    ds.InstanceCreationDate = clock.da(series.moment)
    ds.InstanceCreationTime = clock.tm(series.moment)
    ds.SOPClassUID = modality.sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = clock.da(study.moment)
    ds.SeriesDate = clock.da(series.moment)
    ds.AcquisitionDate = clock.da(series.moment)
    ds.ContentDate = clock.da(series.moment)
    ds.StudyTime = clock.tm(study.moment)
    ds.SeriesTime = clock.tm(series.moment)
    ds.AcquisitionTime = clock.tm(series.moment)
    ds.ContentTime = clock.tm(series.moment)
    ds.AccessionNumber = study.accession
    ds.IssuerOfAccessionNumberSequence = [_item(LocalNamespaceEntityID=f"{site.code}-RIS")]
    ds.Modality = series.modality
    ds.Manufacturer = device.manufacturer
    ds.InstitutionName = site.name
    ds.InstitutionAddress = site.address
    ds.ReferringPhysicianName = study.referring
    ds.ReferringPhysicianTelephoneNumbers = f"{site.template.postal_code[:3]}-4{number % 10}00"
    ds.TimezoneOffsetFromUTC = clock.dicom_offset(study.moment, offset)
    ds.StationName = device.station_name
    ds.StudyDescription = study.exam.description
    ds.ProcedureCodeSequence = [_code_item(study.procedure.code)]
    ds.SeriesDescription = series.description
    ds.InstitutionalDepartmentName = site.template.department
    ds.PhysiciansOfRecord = study.referring
    ds.PerformingPhysicianName = study.performing
    ds.NameOfPhysiciansReadingStudy = study.reading
    ds.OperatorsName = study.operator
    ds.ManufacturerModelName = device.model
    ds.PatientName = person.dicom_name
    ds.PatientID = record.mrn
    ds.IssuerOfPatientID = site.mrn_system
    ds.PatientBirthDate = clock.da(person.birth_date)
    ds.PatientSex = person.sex
    ds.OtherPatientIDsSequence = [
        _item(PatientID=record.legacy_id, IssuerOfPatientID=f"{site.code}-LEGACY-RIS",
              TypeOfPatientID="TEXT"),
        _item(PatientID=person.national_id, IssuerOfPatientID=person.national_id_system,
              TypeOfPatientID="TEXT"),
    ]
    ds.PatientAge = f"{clock.age_on(person.birth_date, study.moment.date()):03d}Y"
    ds.PatientSize = f"{person.height_cm / 100:.2f}"
    ds.PatientWeight = f"{study.weight_kg:.1f}"
    ds.PatientAddress = _patient_address(person.address.one_line())
    ds.PatientTelephoneNumbers = person.phone.replace(" ", "")  # SH: 16 characters
    if study.reason:
        ds.AdditionalPatientHistory = (
            f"{study.reason.definition.snomed.display} since {study.reason.onset:%d/%m/%Y}. "
            f"Referred by {_readable(study.referring)}.")
    ds.PatientComments = f"Contact {person.full_name}, {person.phone}"

    ds.DeviceSerialNumber = device.serial
    ds.SoftwareVersions = device.software
    ds.ProtocolName = f"{study.exam.key} {series.description}"
    ds.BodyPartExamined = study.exam.body_part
    _acquisition(ds, series, modality, study, number)

    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = number
    if modality.cross_sectional:
        ds.FrameOfReferenceUID = study.frame_uid
        ds.PositionReferenceIndicator = ""
        location = (number - 1) * SLICE_MM
        ds.ImagePositionPatient = [-80.0, -80.0, location]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = location
        if series.modality != "PT":  # PET says it with codes, and then must not here
            ds.PatientPosition = "HFS"
    for keyword, value in series.extra.items():
        setattr(ds, keyword, value)
    if (study.exam.body_part in PAIRED_BODY_PARTS and "Laterality" not in ds
            and "ImageLaterality" not in ds):
        ds.Laterality = ""  # Type 2C, empty: a side not known (the axilla of a breast US)
    if not modality.cross_sectional:
        ds.PatientOrientation = _patient_orientation(ds)
    if series.modality in ("DX", "MG"):
        _digital_xray(ds, modality, study.exam.body_part)
    ds.ImageComments = f"{series.description} image {number}, tech {_readable(study.operator)}"

    ds.RequestAttributesSequence = [_item(
        RequestedProcedureID=study.requested_procedure_id,
        ScheduledProcedureStepID=study.scheduled_step_id,
        AccessionNumber=study.accession,
        RequestedProcedureDescription=study.exam.description,
        ReasonForTheRequestedProcedure=_reason_text(study),
        RequestingPhysician=study.referring,
    )]
    ds.PerformedProcedureStepStartDate = clock.da(study.moment)
    ds.PerformedProcedureStepStartTime = clock.tm(study.moment)
    ds.PerformedProcedureStepID = study.scheduled_step_id.replace("SPS", "PPS")
    ds.PerformedProcedureStepDescription = study.exam.description
    ds.BurnedInAnnotation = "YES" if series.burned_in else "NO"

    _pixels(ds, modality, site, record, study, series, number,
            person.dicom_name if series.burned_in else None)
    _private_block(ds, record, study)
    return ds


def _file_meta(sop_class: str, sop_uid: str, station: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    meta.SourceApplicationEntityTitle = station[:16]
    return meta


def _item(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _code_item(code: Code) -> Dataset:
    scheme = {"http://snomed.info/sct": "SCT", "http://loinc.org": "LN"}.get(code.system, "99")
    return _item(CodeValue=code.code, CodingSchemeDesignator=scheme, CodeMeaning=code.display)


def _readable(pn: str) -> str:
    family, given, *_ = [*pn.split("^"), ""]
    return f"{given} {family}".strip()


def _patient_address(address: str) -> str:
    """Patient's Address is LO, at most 64 characters (PS3.5 Table 6.2-1): a long one loses
    its country first, as a local RIS would write it, and is cut only if still too long."""
    if len(address) > LO_MAX:
        address = address.rsplit(", ", 1)[0]
    return address[:LO_MAX]


def _reason_text(study: StudyRecord) -> str:
    if study.reason is None:
        return "Clinical indication not stated"
    definition = study.reason.definition
    return f"{definition.icd10.code} {definition.snomed.display}, follow-up"[:LO_MAX]


def _sr_code_item(code: SRCode) -> Dataset:
    return _item(CodeValue=code.value, CodingSchemeDesignator=code.scheme_designator,
                 CodeMeaning=code.meaning)


def _acquisition(ds: Dataset, series: SeriesRecord, modality: ModalityDef,
                 study: StudyRecord, number: int) -> None:
    if series.modality == "MR":
        t1 = "T1" in series.description
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = "FS" if " FS " in f" {series.description} " else ""  # Type 2
        ds.MRAcquisitionType = "2D"
        ds.MagneticFieldStrength = study.device.field_strength or "1.5"
        ds.RepetitionTime = "500" if t1 else "4000"
        ds.EchoTime = "12" if t1 else "90"
        ds.EchoTrainLength = "1" if t1 else "16"  # a T2 is a turbo spin echo
        ds.SliceThickness = str(SLICE_MM)
    elif series.modality == "CT":
        ds.KVP = "120"
        ds.SliceThickness = str(SLICE_MM)
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
    elif series.modality == "PT":
        ds.SliceThickness = str(SLICE_MM)
        ds.Units = "BQML"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        _pet(ds, series, study.exam.body_part, number)
    if modality.cross_sectional:
        ds.PixelSpacing = [5.0, 5.0]
    elif series.modality != "US":  # projection radiography: spacing at the detector
        ds.ImagerPixelSpacing = [0.5, 0.5]


def _pet(ds: Dataset, series: SeriesRecord, body_part: str, number: int) -> None:
    """PET Series, PET Isotope, NM/PET Patient Orientation and PET Image (PS3.3 C.8.9):
    a static FDG acquisition, one instance per slice, decay corrected to its start."""
    attenuation_corrected = "NAC" not in series.description.split()
    ds.SeriesType = ["WHOLE BODY" if body_part == "WHOLEBODY" else "STATIC", "IMAGE"]
    ds.CountsSource = "EMISSION"
    ds.NumberOfSlices = series.instances
    ds.CorrectedImage = ["DECY", "ATTN"] if attenuation_corrected else ["DECY"]
    ds.DecayCorrection = "START"
    ds.CollimatorType = "NONE"  # a 3D PET has no septa
    ds.RadiopharmaceuticalInformationSequence = [_item(
        RadionuclideCodeSequence=[_sr_code_item(codes.cid4020._18Fluorine)],
        RadiopharmaceuticalCodeSequence=[_sr_code_item(codes.cid4021.FluorodeoxyglucoseF18)],
        RadiopharmaceuticalRoute="IV",
        AdministrationRouteCodeSequence=[_sr_code_item(codes.SCT.IntravenousRoute)],
        RadionuclideTotalDose=FDG_DOSE_BQ.get(body_part, "300000000"),
        RadionuclideHalfLife=F18_HALF_LIFE_S,
    )]
    orientation = _sr_code_item(codes.cid19.Recumbent)
    orientation.PatientOrientationModifierCodeSequence = [_sr_code_item(codes.cid20.Supine)]
    ds.PatientOrientationCodeSequence = [orientation]  # the HFS of the PET-CT's CT series
    ds.PatientGantryRelationshipCodeSequence = [_sr_code_item(codes.cid21.Headfirst)]
    ds.FrameReferenceTime = "0"
    ds.ActualFrameDuration = PET_FRAME_MS.get(body_part, "180000")
    ds.DecayFactor = "1"  # decay during a frame is not modelled
    ds.ImageIndex = number  # (time slice - 1) x slices + slice, one time slice


def _patient_orientation(ds: Dataset) -> list[str] | str:
    """Patient Orientation of an image without Image Orientation (Patient): from its view
    for projection radiographs, empty (Type 2C, unknown) for ultrasound."""
    view = ds.get("ViewPosition", "")
    if ds.Modality == "MG":
        return MAMMOGRAM_ORIENTATION[ds.ImageLaterality, view]
    return PROJECTION_ORIENTATION.get(view, "")


def _digital_xray(ds: Dataset, modality: ModalityDef, body_part: str) -> None:
    """What the DX and Digital Mammography For Presentation IODs add (PS3.3 C.8.11): DX
    Series, DX Anatomy Imaged, DX Image, DX Detector, DX Positioning, Mammography Image,
    Acquisition Context. MONOCHROME2 pixels that rise where the beam was attenuated."""
    mammogram = ds.Modality == "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    if not mammogram:
        ds.ImageLaterality = "U"  # DX exams here are of the chest, unpaired
    ds.AnatomicRegionSequence = [_sr_code_item(ANATOMIC_REGIONS[body_part])]
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1  # higher values, less X-ray intensity
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    levels = 1 << modality.bits_stored  # a window over the whole stored range
    ds.WindowCenter = str(levels // 2)
    ds.WindowWidth = str(levels)
    ds.LossyImageCompression = "00"
    ds.DetectorType = "DIRECT" if mammogram else "SCINTILLATOR"
    ds.PositionerType = "MAMMOGRAPHIC" if mammogram else "COLUMN"
    view = _sr_code_item(VIEW_CODES[ds.ViewPosition])
    if mammogram:
        ds.OrganExposed = "BREAST"
        view.ViewModifierCodeSequence = []  # Type 2: no modifier (no spot, no cleavage)
    ds.ViewCodeSequence = [view]
    ds.AcquisitionContextSequence = []  # Type 2: nothing recorded


def _pixels(ds: Dataset, modality: ModalityDef, site: Site, record: PatientRecord,
            study: StudyRecord, series: SeriesRecord, number: int,
            burned_in_text: str | None) -> None:
    rows, columns = modality.rows, modality.columns
    eight_bit = modality.bits_stored == 8
    seed = int.from_bytes(hashlib.blake2b(f"{series.uid}/{number}".encode(),
                                          digest_size=8).digest(), "big")
    rng = np.random.default_rng(seed)
    # The patient's anatomy through the scanner's effect (spe/synth/pixels.py).
    device = study.device
    top = pixels_model.full_scale(modality)
    image = pixels_model.image(
        series.modality, modality, study.exam.body_part, pixels_model.subject(record, study),
        pixels_model.scanner_effect(device.manufacturer, device.model, site.index), rng)
    if burned_in_text:
        # The annotation band: the name's UTF-8 bytes as pixel values along the top row.
        band = np.zeros((ANNOTATION_ROWS, columns))
        text = burned_in_text.encode()[:columns]
        band[0, :len(text)] = np.frombuffer(text, dtype=np.uint8)
        band[1:, :len(text)] = top
        image[:ANNOTATION_ROWS] = band
    dtype = np.uint8 if eight_bit else (np.int16 if modality.signed else np.uint16)
    pixels = image.astype(dtype)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8 if eight_bit else 16
    ds.BitsStored = modality.bits_stored
    ds.HighBit = modality.bits_stored - 1
    ds.PixelRepresentation = 1 if modality.signed else 0
    ds.PixelData = pixels.tobytes()


def _private_block(ds: Dataset, record: PatientRecord, study: StudyRecord) -> None:
    # Vendors keep copies of identifying data in private tags; the anonymiser must drop them.
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", record.person.full_name)
    block.add_new(0x02, "LO", record.mrn)
    block.add_new(0x03, "DA", clock.da(record.person.birth_date))
    block.add_new(0x04, "LT", f"Workstation {study.device.station_name}, read by "
                              f"{_readable(study.reading)}")
    if study.previous_uid:
        block.add_new(0x05, "UI", study.previous_uid)
    block.add_new(0x10, "SQ", [_item(OperatorsName=study.operator,
                                     StationName=study.device.station_name)])
