"""PS3.15 Annex E layer 1: the table's actions and options on real attributes, nested too."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import date
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from spe.anonymize.dicom import generate_table, table
from spe.anonymize.dicom.options import Options
from spe.anonymize.dicom.profile import Deidentifier
from spe.anonymize.pseudonyms import MAX_PSEUDONYM_LENGTH
from spe.synth import generate


class FakeKey:
    """Deterministic stand-in for spe.anonymize.pseudonyms.PermitKey."""

    def _digest(self, text: str) -> bytes:
        return hashlib.sha256(b"test-permit\0" + text.encode()).digest()

    def uid(self, value: str) -> str:
        return "2.25." + str(int.from_bytes(self._digest("uid:" + value)[:16], "big"))

    def pseudonym(self, value: str, kind: str, length: int) -> str:
        return "P" + self._digest(f"{kind}:{value}").hex().upper()[:length - 1]

    def date_shift_days(self, patient_id: str) -> int:
        return -1 - int.from_bytes(self._digest("shift:" + patient_id)[:4], "big") % 3650


KEY = FakeKey()


def deid(ds: Dataset, options: Options | None = None, **kwargs):
    return Deidentifier(options or Options(), KEY, **kwargs).apply(ds)


def nested(item: Dataset) -> Dataset:
    """`item` two levels deep in standard sequences the table does not list."""
    outer = Dataset()
    inner = Dataset()
    inner.ReferencedInstanceSequence = [item]
    outer.ReferencedSeriesSequence = [inner]
    return outer


def deep(ds: Dataset) -> Dataset:
    return ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]


def both(**values: object) -> Dataset:
    """A dataset holding `values` at the top level and again nested two levels deep."""
    ds = Dataset()
    item = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
        setattr(item, keyword, value)
    ds.update(nested(item))
    return ds


def levels(ds: Dataset) -> list[Dataset]:
    return [ds, deep(ds)]


# The table -----------------------------------------------------------------------------

def test_generated_table_matches_its_source():
    source = json.loads(generate_table.SOURCE.read_text(encoding="utf-8"))
    assert generate_table.render(source) == generate_table.TARGET.read_text(encoding="utf-8")


def test_table_holds_every_row_of_the_source():
    source = json.loads(generate_table.SOURCE.read_text(encoding="utf-8"))
    assert len(table.EXACT) + len(table.MASKED) + 1 == len(source)
    assert table.EXACT[0x00080050] == ("Z", {})  # Accession Number
    assert (0xFF00FFFF, 0x60003000, "X", {"cleanGraphOpt": "C"}) in table.MASKED
    assert table.PRIVATE == ("X", {"rtnSafePrivOpt": "C"})


# One test per action code ------------------------------------------------------------

def test_x_removes_at_every_level():
    ds = both(PatientAddress="Calle del Olmo 148", PatientComments="call Ana",
              OtherPatientIDs="R123")
    ds.OtherPatientIDsSequence = [Dataset()]
    ds.OtherPatientIDsSequence[0].PatientID = "R16086496"
    deid(ds)
    for level in levels(ds):
        assert "PatientAddress" not in level
        assert "PatientComments" not in level
        assert "OtherPatientIDs" not in level
    assert "OtherPatientIDsSequence" not in ds


def test_z_empties_at_every_level():
    ds = both(AccessionNumber="HVH240000000", PatientName="Bonnet^François",
              ReferringPhysicianName="Romero^Begoña", StudyDate="20240323", StudyID="00001")
    result = deid(ds)
    for level in levels(ds):
        for keyword in ("AccessionNumber", "PatientName", "ReferringPhysicianName",
                        "StudyDate", "StudyID"):
            assert keyword in level
            assert level[keyword].value in ("", None)
    assert result.counts["Z"] == 10


def test_d_replaces_with_a_dummy_valid_for_the_vr_at_every_level():
    ds = both(PersonName="Sánchez^Juan", ClinicalTrialSubjectID="SUBJ-77",
              VerifyingOrganization="Hospital Valle", Date="20240323", Time="105651",
              DateTime="20240323105651")
    deid(ds)
    for level in levels(ds):
        assert level.PersonName == "ANONYMOUS"
        assert level.VerifyingOrganization == "ANONYMIZED"
        assert level.Date == "19000101"
        assert level.Time == "000000"
        assert level.DateTime == "19000101000000"
        # an identifier keeps linkage through a keyed pseudonym sized to its VR (LO, 64)
        # within what PermitKey can give (52): a 64 asked of it failed the whole file
        assert level.ClinicalTrialSubjectID == KEY.pseudonym(
            "SUBJ-77", "ClinicalTrialSubjectID", MAX_PSEUDONYM_LENGTH)


def test_d_on_patient_id_is_a_16_character_pseudonym():
    ds = both(PatientID="HVH0518919")
    deid(ds)
    for level in levels(ds):
        assert level.PatientID == KEY.pseudonym("HVH0518919", "patient", 16)
        assert len(level.PatientID) <= 16


def test_k_keeps_what_an_option_retains_and_what_the_table_does_not_list():
    ds = both(PatientSex="F", PatientAge="041Y", Modality="MR", BodyPartExamined="CHEST")
    deid(ds, Options(retain_patient_characteristics=True))
    for level in levels(ds):
        assert level.PatientSex == "F"
        assert level.PatientAge == "041Y"
        assert level.Modality == "MR"
        assert level.BodyPartExamined == "CHEST"


def test_c_shifts_dates_keeping_precision_and_offset_at_every_level():
    ds = both(StudyDate="20240323", StudyTime="105651",
              AcquisitionDateTime="20240323105651.123456+0100")
    ds.PatientID = "HVH0518919"
    days = KEY.date_shift_days("HVH0518919")
    result = deid(ds, Options(retain_long_modified_dates=True))
    expected = date.fromordinal(date(2024, 3, 23).toordinal() + days).strftime("%Y%m%d")
    for level in levels(ds):
        assert level.StudyDate == expected
        assert level.StudyTime == "105651"
        assert level.AcquisitionDateTime == expected + "105651.123456+0100"
    assert result.dates_shifted
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_c_shifts_partial_date_times_keeping_their_precision():
    ds = Dataset()
    ds.PatientID = "X1"
    ds.AcquisitionDateTime = "2024"
    ds.ContentDate = "20240101"
    deid(ds, Options(retain_long_modified_dates=True))
    assert len(ds.AcquisitionDateTime) == 4
    assert ds.AcquisitionDateTime == ds.ContentDate[:4]


def test_c_cleans_descriptors_of_the_datasets_own_identifiers():
    ds = both(StudyDescription="MR SPINE Bonnet", ImageComments="T2 SAG, tech Ana Iglesias",
              SeriesDescription="ref HVH0518919", ProtocolName="legacy R16086496")
    ds.PatientName = "Bonnet^François"
    ds.OperatorsName = "Iglesias^Ana"
    ds.PatientID = "HVH0518919"
    deid(ds, Options(clean_descriptors=True))
    for level in levels(ds):
        assert level.StudyDescription == "MR SPINE"
        assert level.ImageComments == "T2 SAG, tech"
        assert level.SeriesDescription == "ref"
        # an id-like digit run the dataset does not name elsewhere drops the value, leaving
        # the basic action (X/D -> D)
        assert level.ProtocolName == "ANONYMIZED"


def test_c_on_a_sequence_applies_the_table_inside_it():
    request = Dataset()
    request.AccessionNumber = "HVH240000000"
    request.RequestingPhysician = "Romero^Begoña"
    request.RequestedProcedureDescription = "MR CERVICAL SPINE"
    ds = Dataset()
    ds.RequestAttributesSequence = [request]
    deid(ds)
    assert "RequestAttributesSequence" not in ds
    ds = Dataset()
    ds.RequestAttributesSequence = [request]
    deid(ds, Options(clean_descriptors=True))
    kept = ds.RequestAttributesSequence[0]
    assert kept.AccessionNumber == ""
    assert "RequestingPhysician" not in kept
    assert kept.RequestedProcedureDescription == "MR CERVICAL SPINE"


def test_u_replaces_uids_consistently_at_every_level():
    ds = both(StudyInstanceUID="1.2.3.4", SeriesInstanceUID="1.2.3.4.5",
              FrameOfReferenceUID="1.2.3.4.6", ReferencedSOPInstanceUID="1.2.3.4.5.6")
    deid(ds)
    for level in levels(ds):
        assert level.StudyInstanceUID == KEY.uid("1.2.3.4")
        assert level.SeriesInstanceUID == KEY.uid("1.2.3.4.5")
        assert level.FrameOfReferenceUID == KEY.uid("1.2.3.4.6")
        assert level.ReferencedSOPInstanceUID == KEY.uid("1.2.3.4.5.6")


# Combined codes ------------------------------------------------------------------------

def test_combined_codes():
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = MRImageStorage
    referenced.ReferencedSOPInstanceUID = "1.2.3.9"
    study = Dataset()
    study.ReferencedSOPInstanceUID = "1.2.3.8"
    ds = both(StationName="HVHMR03", SeriesDate="20240323", ContentCreatorName="Doe^Jo")
    ds.ReferencedImageSequence = [referenced]  # X/Z/U*
    ds.ReferencedStudySequence = [study]  # X/Z
    ds.PatientID = "HVH0518919"  # Z/D
    deid(ds)
    for level in levels(ds):
        assert level.StationName == "ANONYMIZED"  # X/Z/D -> D
        assert level.SeriesDate == "19000101"  # X/D -> D
        assert level.ContentCreatorName == "ANONYMOUS"  # Z/D -> D
    # no SOP class, so no Types: elements take D over Z over X, a sequence is removed
    assert "ReferencedStudySequence" not in ds  # X/Z -> X
    item = ds.ReferencedImageSequence[0]  # X/Z/U* on SQ -> kept, its UIDs replaced
    assert item.ReferencedSOPInstanceUID == KEY.uid("1.2.3.9")
    assert item.ReferencedSOPClassUID == MRImageStorage
    assert ds.PatientID == KEY.pseudonym("HVH0518919", "patient", 16)


# Options -------------------------------------------------------------------------------

def test_retain_device_identity_keeps_station_and_serial():
    ds = both(StationName="HVHMR03", DeviceSerialNumber="374311")
    deid(ds, Options(retain_device_identity=True))
    for level in levels(ds):
        assert level.StationName == "HVHMR03"
        assert level.DeviceSerialNumber == "374311"
    ds = both(StationName="HVHMR03", DeviceSerialNumber="374311")
    deid(ds)
    assert ds.StationName == "ANONYMIZED"
    assert ds.DeviceSerialNumber == "ANONYMIZED"


def test_retain_patient_characteristics_keeps_sex_age_size_weight():
    ds = both(PatientSex="M", PatientAge="083Y", PatientSize="1.70", PatientWeight="66.9")
    deid(ds, Options(retain_patient_characteristics=True))
    for level in levels(ds):
        assert (level.PatientSex, level.PatientAge) == ("M", "083Y")
        assert (str(level.PatientSize), str(level.PatientWeight)) == ("1.70", "66.9")
    ds = both(PatientSex="M", PatientAge="083Y", PatientSize="1.70")
    deid(ds)
    assert ds.PatientSex == ""
    assert "PatientAge" not in ds
    assert "PatientSize" not in ds


def test_retain_uids_keeps_uids():
    ds = both(StudyInstanceUID="1.2.3.4", SOPInstanceUID="1.2.3.4.5.6")
    deid(ds, Options(retain_uids=True))
    for level in levels(ds):
        assert level.StudyInstanceUID == "1.2.3.4"
        assert level.SOPInstanceUID == "1.2.3.4.5.6"


def test_retain_institution_identity_keeps_institution():
    ds = both(InstitutionName="Hospital Valle", InstitutionAddress="Avenida 1, Madrid",
              InstitutionalDepartmentName="Radiology")
    deid(ds, Options(retain_institution_identity=True))
    for level in levels(ds):
        assert level.InstitutionName == "Hospital Valle"
        assert level.InstitutionAddress == "Avenida 1, Madrid"
        assert level.InstitutionalDepartmentName == "Radiology"
    ds = both(InstitutionName="Hospital Valle", InstitutionAddress="Avenida 1, Madrid")
    deid(ds)
    assert ds.InstitutionName == "ANONYMIZED"
    assert "InstitutionAddress" not in ds


def test_retain_full_dates_keeps_dates_and_says_unmodified():
    ds = both(StudyDate="20240323", AcquisitionDateTime="20240323105651")
    deid(ds, Options(retain_long_full_dates=True))
    for level in levels(ds):
        assert level.StudyDate == "20240323"
        assert level.AcquisitionDateTime == "20240323105651"
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_the_two_date_options_are_alternatives():
    with pytest.raises(ValueError, match="alternatives"):
        Options(retain_long_full_dates=True, retain_long_modified_dates=True)


def test_clean_graphics_and_structured_content_clean_inside_instead_of_replacing():
    def graphics() -> Dataset:
        annotation = Dataset()
        annotation.GraphicLayer = "L1"
        ds = Dataset()
        ds.GraphicAnnotationSequence = [annotation]
        content = Dataset()
        content.PersonName = "Doe^Jo"
        content.ValueType = "PNAME"
        ds.ContentSequence = [content]
        return ds

    ds = graphics()
    deid(ds)
    # D on a sequence of an object whose IOD is unknown (no SOP class): no dummy item can be
    # built without the item's Types, so the sequences go
    assert "GraphicAnnotationSequence" not in ds
    assert "ContentSequence" not in ds
    ds = graphics()
    deid(ds, Options(clean_graphics=True, clean_structured_content=True))
    assert ds.GraphicAnnotationSequence[0].GraphicLayer == "L1"
    assert ds.ContentSequence[0].ValueType == "PNAME"
    assert ds.ContentSequence[0].PersonName == "ANONYMOUS"


def test_overlay_data_and_comments_follow_the_masked_rows():
    ds = Dataset()
    ds.add_new(0x60004000, "LT", "reader: Dr Doe")
    ds.add_new(0x60003000, "OW", b"\x00\x01")
    ds.add_new(0x60000010, "US", 512)  # Overlay Rows: not listed, but its module goes
    ds.add_new(0x50023000, "OW", b"\x00\x01")  # Curve Data
    ds.add_new(0x50020005, "US", 1)  # Curve Dimensions
    ds.add_new(0x60010010, "LO", "private creator in an odd group: not an overlay")
    deid(ds)
    assert 0x60004000 not in ds
    assert 0x60003000 not in ds
    assert 0x60000010 not in ds  # the Overlay Plane module is removed whole
    assert 0x50020005 not in ds  # and the Curve module
    assert 0x60010010 not in ds  # private, gone by the private rule


# Private tags, names -------------------------------------------------------------------

def private_dataset() -> Dataset:
    ds = Dataset()
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "safe value")
    block.add_new(0x02, "LO", "Bonnet^François")
    other = ds.private_block(0x0011, "SPE SYNTH", create=True)
    other.add_new(0x01, "LO", "HVH0518919")
    item = Dataset()
    item.private_block(0x0009, "ACME 1.0", create=True).add_new(0x02, "LO", "nested")
    ds.update(nested(item))
    return ds


def test_private_tags_are_removed_by_default_at_every_level():
    ds = private_dataset()
    deid(ds, safe_private={("ACME 1.0", 0x01)})  # the list alone does not retain
    for level in levels(ds):
        assert not [e for e in level if e.tag.is_private]


def test_retain_safe_private_keeps_only_listed_elements_and_their_creator():
    ds = private_dataset()
    deid(ds, Options(retain_safe_private=True), safe_private={("ACME 1.0", 0x01)})
    private = {e.tag: e.value for e in ds if e.tag.is_private}
    assert private == {0x00090010: "ACME 1.0", 0x00091001: "safe value"}
    assert not [e for e in deep(ds) if e.tag.is_private]


def test_names_not_in_the_table_are_removed():
    ds = both(SecondaryReviewerName="Doe^Jo", EvaluatorName="Roe^Ann")
    deid(ds)
    for level in levels(ds):
        assert "SecondaryReviewerName" not in level
        assert "EvaluatorName" not in level


# Markers, files, UIDs across files -----------------------------------------------------

def test_deidentification_markers_name_the_profile_and_applied_options():
    ds = both(PatientID="P1", StudyDate="20240101")
    deid(ds, Options(retain_uids=True, retain_long_modified_dates=True))
    assert ds.PatientIdentityRemoved == "YES"
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in
             ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113107", "DCM"), ("113110", "DCM")]
    assert all(len(v) <= 64 for v in ds.DeidentificationMethod)
    assert "Retain UIDs Option" in ds.DeidentificationMethod
    plain = Dataset()
    deid(plain)
    assert [i.CodeValue for i in plain.DeidentificationMethodCodeSequence] == ["113100"]
    assert plain.LongitudinalTemporalInformationModified == "REMOVED"


def instance(sop: str, study: str = "1.2.826.0.1.9", patient: str = "HVH0518919") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "HVHMR03"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = study + ".1"
    ds.PatientName = "Bonnet^François"
    ds.PatientID = patient
    ds.Modality = "MR"
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\x04\x00"
    return ds


def test_uids_map_consistently_across_two_files_of_one_study():
    first = instance("1.2.826.0.1.9.1.1")
    second = instance("1.2.826.0.1.9.1.2")
    source = Dataset()
    source.ReferencedSOPClassUID = MRImageStorage
    source.ReferencedSOPInstanceUID = "1.2.826.0.1.9.1.1"
    second.SourceImageSequence = [source]
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.826.0.1.9.1.1"
    second.update(nested(inner))
    key = Deidentifier(Options(), KEY)
    key.apply(first)
    key.apply(second)
    assert first.StudyInstanceUID == second.StudyInstanceUID != "1.2.826.0.1.9"
    assert second.SourceImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert deep(second).ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert first.SOPInstanceUID.startswith("2.25.")


def test_output_saves_as_a_part10_file_with_pixels_intact(tmp_path: Path):
    ds = instance("1.2.826.0.1.9.1.1")
    deid(ds)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    ds.save_as(tmp_path / "out.dcm", enforce_file_format=True)
    back = pydicom.dcmread(tmp_path / "out.dcm")
    assert back.PixelData == b"\x01\x00\x02\x00\x03\x00\x04\x00"
    assert back.pixel_array.tolist() == [[1, 2], [3, 4]]
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.PatientIdentityRemoved == "YES"


def test_burned_in_annotation_is_left_to_the_pixel_step_with_a_warning():
    ds = instance("1.2.3")
    ds.BurnedInAnnotation = "YES"
    assert deid(ds).warnings
    with pytest.raises(ValueError, match="pixel_cleaner"):
        Deidentifier(Options(clean_pixel_data=True), KEY)
    seen = []
    ds = instance("1.2.3")
    ds.BurnedInAnnotation = "YES"
    result = deid(ds, Options(clean_pixel_data=True),
                  pixel_cleaner=lambda d: seen.append(str(d.PatientName)))
    assert seen == ["Bonnet^François"]  # called before the header is cleaned
    assert not result.warnings
    assert "113101" in [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]


# Datasets read from a file ------------------------------------------------------------
# Elements read from a file are replaced without being decoded, by values already encoded,
# and sequences that hold nothing to change are not decoded at all: the result must be the
# one a dataset built in memory gets.

def code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


def rich(syntax: str) -> Dataset:
    ds = instance("1.2.826.0.1.9.1.1")
    ds.file_meta.TransferSyntaxUID = syntax
    ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.ContentTime = "20240101", "101010", \
        "20240101", "101010"
    ds.AcquisitionDateTime = "20240101101010.123+0100"
    ds.InstitutionName = "Hôpital Sainte-Anne"
    ds.StationName, ds.DeviceSerialNumber = "HVHMR03", "SN 4711"
    ds.OperatorsName = "Dupont^Lucie"
    ds.PatientSex, ds.PatientAge, ds.PatientWeight = "F", "042Y", "61.5"
    ds.PregnancyStatus = 4
    ds.FlowIdentifier = b"\x01\x02"
    ds.FailedSOPInstanceUIDList = ["1.2.826.0.1.9.1.7", "1.2.826.0.1.9.1.8"]
    ds.AnnotationGroupUID = "1.2.826.0.1.9.5"
    ds.FrameOfReferenceUID = "1.2.826.0.1.9.6"
    ds.InstitutionCodeSequence = [code("H1", "Hôpital Sainte-Anne")]
    procedure = code("241645008", "Magnetic resonance imaging of spine")
    procedure.ConceptNameCodeSequence = [code("1", "inert, two levels down")]
    ds.ProcedureCodeSequence = [procedure, code("2", "inert too")]
    region = code("T-D0146", "Spine")
    modifier = code("3", "holds a name two levels down")
    modifier.PatientName = "Dupont^Lucie"
    region.AnatomicRegionModifierSequence = [modifier]
    private = code("4", "holds a private element")
    private.private_block(0x0011, "SPE TEST", create=True).add_new(0x01, "LO", "Dupont")
    ds.AnatomicRegionSequence = [region, private]
    reference = Dataset()
    reference.ReferencedSOPClassUID = MRImageStorage
    reference.ReferencedSOPInstanceUID = "1.2.826.0.1.9.1.2"
    ds.ReferencedImageSequence = [reference]
    ds.private_block(0x0009, "SPE TEST", create=True).add_new(0x01, "LO", "Dupont")
    ds.BurnedInAnnotation = "NO"
    return ds


def dump(ds: Dataset) -> list[tuple[str, str, str]]:
    """Every element but the pixels (their VR is only settled when written)."""
    return [(str(e.tag), e.VR, "" if e.VR == "SQ" else str(e.value)) for e in elements(ds)
            if e.tag != 0x7FE00010]


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                    ExplicitVRBigEndian])
def test_a_dataset_read_from_a_file_comes_out_as_one_built_in_memory(tmp_path: Path,
                                                                     syntax: str):
    rich(syntax).save_as(tmp_path / "in.dcm", enforce_file_format=True)
    read = pydicom.dcmread(tmp_path / "in.dcm")
    memory = rich(syntax)
    assert memory.original_encoding == (None, None)
    results = [Deidentifier(Options(), KEY).apply(ds) for ds in (memory, read)]
    assert results[0] == results[1]
    inert = read._dict[tag_for_keyword("ProcedureCodeSequence")]
    assert isinstance(inert, RawDataElement)  # nothing to change inside: never decoded
    assert dump(read) == dump(memory)
    assert read.file_meta.MediaStorageSOPInstanceUID == read.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in read.file_meta
    for name, ds in (("memory", memory), ("read", read)):
        ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
    back = [pydicom.dcmread(tmp_path / f"{name}.dcm") for name in ("memory", "read")]
    assert dump(back[0].file_meta) + dump(back[0]) == dump(back[1].file_meta) + dump(back[1])
    assert (tmp_path / "memory.dcm").read_bytes() == (tmp_path / "read.dcm").read_bytes()
    region = back[1].AnatomicRegionSequence
    assert region[0].AnatomicRegionModifierSequence[0].PatientName == ""
    assert not [e for e in elements(back[1]) if e.tag.is_private]
    # combined codes by the Type in the MR Image IOD: Institution Code Sequence (X/Z/D) is
    # Type 3 in General Equipment, Operators' Name (X/Z/D) Type 3 in General Series: both
    # removed; Content Time (Z/D) is Type 2C in General Image: emptied
    assert "InstitutionCodeSequence" not in back[1]
    assert "OperatorsName" not in back[1]
    assert back[1].ContentTime == ""
    assert back[1].PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in back[1].DeidentificationMethodCodeSequence] == ["113100"]


def test_uids_read_from_files_map_as_in_memory_across_files(tmp_path: Path):
    key = Deidentifier(Options(), KEY)
    mapped = []
    for number in range(3):
        ds = rich(ExplicitVRLittleEndian)
        ds.SOPInstanceUID = f"1.2.826.0.1.9.1.{number + 10}"
        ds.save_as(tmp_path / f"{number}.dcm", enforce_file_format=True)
        read = pydicom.dcmread(tmp_path / f"{number}.dcm")
        key.apply(read)
        mapped.append(read)
    assert len({ds.SOPInstanceUID for ds in mapped}) == 3
    assert {ds.StudyInstanceUID for ds in mapped} == {KEY.uid("1.2.826.0.1.9")}
    assert mapped[2].FailedSOPInstanceUIDList == [KEY.uid("1.2.826.0.1.9.1.7"),
                                                  KEY.uid("1.2.826.0.1.9.1.8")]


# A synthetic federation ----------------------------------------------------------------

IDENTIFYING = frozenset({
    "PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "PatientAddress",
    "PatientTelephoneNumbers", "AccessionNumber", "RequestedProcedureID",
    "ScheduledProcedureStepID", "PerformedProcedureStepID", "ReferringPhysicianName",
    "ReferringPhysicianTelephoneNumbers", "PhysiciansOfRecord", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "ReferencedSOPInstanceUID", "MediaStorageSOPInstanceUID", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "InstanceCreationDate",
    "PerformedProcedureStepStartDate", "StudyID", "PatientComments", "ImageComments",
    "AdditionalPatientHistory", "SourceApplicationEntityTitle", "IssuerOfPatientID",
    "LocalNamespaceEntityID", "PatientAge", "PatientSize", "PatientWeight",
    "ReasonForTheRequestedProcedure", "RequestedProcedureDescription", "ProtocolName",
    "TimezoneOffsetFromUTC", "SeriesTime", "StudyTime", "AcquisitionTime", "ContentTime",
})


TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "AE", "CS"})


def elements(ds: Dataset):
    """Every element, depth first, sequences' items included."""
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from elements(item)


def identifying_values(ds: Dataset) -> set[str]:
    found: set[str] = set()
    everything = list(elements(ds.file_meta)) + list(elements(ds))
    for elem in everything:
        if elem.VR == "SQ" or elem.value in (None, ""):
            continue
        if elem.keyword in IDENTIFYING or elem.VR == "PN" or (
                elem.tag.is_private and elem.tag.element >= 0x1000):
            for value in (elem.value if elem.VM > 1 else [elem.value]):
                text = str(value)
                found.add(text)
                if elem.VR == "PN":  # each name part on its own
                    found.update(p for p in text.split("^") if len(p) >= 3)
    return found


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("federation")
    generate(root, institutions=2, patients=15, seed=4)
    return root


def files_of(root: Path) -> list[Path]:
    files = sorted(root.glob("site-*/dicom/**/*.dcm"))
    assert len(files) > 50
    return files


def leaks_of(path: Path, key: Deidentifier, out: Path) -> list[str]:
    """The input's identifying values still found in its de-identified, saved output."""
    ds = pydicom.dcmread(path)
    secrets = identifying_values(ds)
    assert "PatientName" in ds
    assert str(ds.PatientName) in secrets
    key.apply(ds)
    ds.save_as(out, enforce_file_format=True)
    back = pydicom.dcmread(out)
    assert back.PatientIdentityRemoved == "YES"
    everything = [*elements(back.file_meta), *elements(back)]
    outputs = [str(e.value) for e in everything if e.tag != 0x7FE00010]
    # a run of digits (a study id "00000") turns up by chance inside new 2.25 UIDs and
    # dummy times, so digits are looked for inside text and as whole values elsewhere
    text = [str(e.value) for e in everything if e.VR in TEXT_VRS]
    whole = set(outputs)
    del back.PixelData  # burned-in text is the pixel step's job, not this layer's
    raw = BytesIO()
    back.save_as(raw, enforce_file_format=True)
    data = raw.getvalue()
    leaks = []
    for secret in secrets:
        searched = text if secret.isdigit() else outputs
        if secret in whole or any(secret in value for value in searched):
            leaks.append(secret)
        # in the bytes, only values with letters: digit runs occur in new UIDs by chance
        elif any(c.isalpha() for c in secret) and secret.encode() in data:
            leaks.append(secret)
    return leaks


def test_no_identifying_value_survives_in_a_federation(federation: Path, tmp_path: Path):
    key = Deidentifier(Options(), KEY)
    leaks = []
    for number, path in enumerate(files_of(federation)):
        leaks += [(path.name, leak) for leak in leaks_of(path, key, tmp_path / f"{number}.dcm")]
        assert not [e for e in pydicom.dcmread(tmp_path / f"{number}.dcm") if e.tag.is_private]
    assert leaks == []


def test_the_leak_check_sees_what_an_option_retains(federation: Path, tmp_path: Path):
    key = Deidentifier(Options(retain_institution_identity=True,
                               retain_device_identity=True), KEY)
    path = files_of(federation)[0]
    institution = str(pydicom.dcmread(path, stop_before_pixels=True).InstitutionName)
    leaks = leaks_of(path, key, tmp_path / "out.dcm")
    assert institution in leaks


def test_modified_dates_shift_and_keep_a_patients_intervals(federation: Path):
    key = Deidentifier(Options(retain_long_modified_dates=True), KEY)
    before: dict[str, dict[str, str]] = defaultdict(dict)
    after: dict[str, dict[str, str]] = defaultdict(dict)
    for path in files_of(federation):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        patient, study, day = ds.PatientID, ds.StudyInstanceUID, ds.StudyDate
        key.apply(ds)
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert ds.StudyDate != day
        before[patient][study] = day
        after[ds.PatientID][ds.StudyInstanceUID] = ds.StudyDate

    def interval(first: str, second: str) -> int:
        parse = [date(int(d[:4]), int(d[4:6]), int(d[6:])) for d in (first, second)]
        return (parse[1] - parse[0]).days

    compared = 0
    for patient, studies in before.items():
        if len(studies) < 2:
            continue
        pseudonym = KEY.pseudonym(patient, "patient", 16)
        (s1, d1), (s2, d2) = sorted(studies.items())[:2]
        shifted = after[pseudonym]
        assert interval(shifted[KEY.uid(s1)], shifted[KEY.uid(s2)]) == interval(d1, d2)
        compared += 1
    assert compared > 0


def test_an_unknown_sop_class_takes_choices_valid_at_any_type_and_keeps_nothing():
    ds = Dataset()
    ds.SOPClassUID = "1.2.826.0.1.3680043.2.1125.99.1"  # no IOD known for it
    study = Dataset()
    study.ReferencedSOPInstanceUID = "1.2.3.8"
    ds.ReferencedStudySequence = [study]  # X/Z
    observer = Dataset()
    observer.VerifyingObserverName = "Doe^Jo"
    ds.VerifyingObserverSequence = [observer]  # D
    ds.InstitutionName = "Hôpital Sainte-Anne"  # X/Z/D
    ds.OperatorsName = "Doe^Jo"  # X/Z/D
    deid(ds)
    assert "ReferencedStudySequence" not in ds  # a sequence goes
    assert "VerifyingObserverSequence" not in ds  # no Types to build a dummy item from
    assert ds.InstitutionName == "ANONYMIZED"  # an element gets a dummy: valid at any Type
    assert ds.OperatorsName == "ANONYMOUS"


def test_d_on_a_required_sequence_gives_one_item_valid_in_itself():
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    observer = Dataset()
    observer.VerifyingObserverName = "Doe^Jo"
    observer.VerifyingOrganization = "Hôpital Sainte-Anne"
    observer.VerificationDateTime = "20240102101010"
    observer.VerifyingObserverIdentificationCodeSequence = [code("42", "Doe")]
    observer.VerifyingObserverIdentificationCodeSequence[0].CodeMeaning = "Jo Doe"
    ds.VerifyingObserverSequence = [observer, observer]
    content = Dataset()
    content.RelationshipType, content.ValueType = "CONTAINS", "TEXT"
    content.ConceptNameCodeSequence = [code("121071", "Finding")]
    content.TextValue = "Jo Doe, seen by Dr Roe"
    ds.ContentSequence = [content]
    deid(ds)
    [item] = ds.VerifyingObserverSequence  # Type 1C in SR Document General
    assert item.VerifyingObserverName == "ANONYMOUS"
    assert item.VerifyingOrganization == "ANONYMIZED"
    assert item.VerificationDateTime == "19000101000000"
    assert item.VerifyingObserverIdentificationCodeSequence == []  # Type 2
    [item] = ds.ContentSequence
    assert (item.RelationshipType, item.ValueType) == ("CONTAINS", "TEXT")  # codes kept
    assert item.TextValue == "ANONYMIZED"  # 1C, its condition (TEXT) held
    assert item.ConceptNameCodeSequence[0].CodeMeaning == "ANONYMIZED"
    assert "Doe" not in str(ds)
