"""Text attributes outside Table E.1-1: a planted-identifier corpus through `spe deid dicom`.

Every public attribute of pydicom's data dictionary whose VR holds text
(`unlisted_text.VRS`), listed in the table or not, retired ones included, gets a distinct
marker in every file of the corpus (synthetic files and pydicom's own, explicit and
implicit VR), at the top level and again inside a sequence item; so do the text attributes
of the repeating groups (curves, overlays, 0028,04x2) with their group's first instance.
Only groups 0000 (the command set of a DIMSE message, which pydicom refuses to write into a
file) and 0002 (file meta, the profile's own step) and the allow-list
(`data/safe-text.json`) are left out. The real command runs with its default options, and
no marker may be found in the output's bytes nor in its decoded text. The allow-listed
attributes, planted with values of their own, come through unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import DicomDictionary, RepeatersDictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from spe.anonymize.dicom import unlisted_text
from spe.synth import generate

ROOT = Path(__file__).resolve().parents[3]
KEY_BYTES = b"text corpus test key, 32 bytes!!"
# A sequence the table does not list, walked into: its item gets the markers again.
NESTED_IN = 0x00082218  # Anatomic Region Sequence
NESTED_OFFSET = 5000
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")
SYNTH_MODALITIES = 3  # at least this many modalities of the generator


def marker(n: int) -> str:
    return f"MK{n:04d}Q"  # 7 characters: fits SH and AE; no digit run a UID could share


def value_for(vr: str, n: int) -> str:
    if vr == "PN":
        return f"MARKER^{marker(n)}"
    if vr == "UR":
        return f"urn:{marker(n)}"
    return marker(n)


def _repeater_tag(mask: str) -> int:
    """A tag the mask matches that is not also a dictionary tag of its own (0028,0402 is
    Number of Transform Steps, US), in an even (public) group."""
    return next(tag for digit in "0248" if (tag := int(mask.replace("x", digit), 16))
                not in DicomDictionary and not tag >> 16 & 1)


def planted_tags() -> dict[int, str]:
    """Tag -> VR of every text attribute that gets a marker."""
    safe = unlisted_text.safe()
    tags = {tag: entry[0] for tag, entry in DicomDictionary.items()
            if tag >> 16 not in (0x0000, 0x0002) and tag not in safe
            and unlisted_text.is_text_vr(entry[0])}
    for mask, entry in RepeatersDictionary.items():
        if unlisted_text.is_text_vr(entry[0]):
            tags[_repeater_tag(mask)] = entry[0]
    return tags


def safe_values() -> dict[int, tuple[str, str]]:
    """Tag -> (VR, value) planted for the allow-listed attributes."""
    return {tag: (DicomDictionary[tag][0], f"SAFE{i:03d}")
            for i, tag in enumerate(sorted(unlisted_text.safe()))}


def plant(ds: Dataset, tags: dict[int, str], offset: int) -> dict[str, int]:
    """Markers into `ds` (numbered from `offset`), marker -> tag."""
    planted = {}
    for n, (tag, vr) in enumerate(sorted(tags.items()), start=offset):
        ds[tag] = DataElement(tag, vr, value_for(vr, n))
        planted[marker(n)] = tag
    return planted


def plant_safe(ds: Dataset) -> None:
    for tag, (vr, value) in safe_values().items():
        ds[tag] = DataElement(tag, vr, value)


def build_corpus(src: Path) -> tuple[dict[str, int], list[Path]]:
    """Write the corpus to `src`: (every marker -> its tag, the files written)."""
    tags = planted_tags()
    generate(src / "synth-origin", institutions=1, patients=8, seed=5)
    firsts: dict[str, Path] = {}
    for path in sorted((src / "synth-origin").rglob("*.dcm")):
        firsts.setdefault(pydicom.dcmread(path, stop_before_pixels=True).Modality, path)
    assert len(firsts) >= SYNTH_MODALITIES, firsts  # several IODs, not one
    bases = [(f"synth-{modality}", path) for modality, path in sorted(firsts.items())]
    bases += [(Path(name).stem, Path(get_testdata_file(name))) for name in PYDICOM_FILES]
    markers: dict[str, int] = {}
    files = []
    out = src / "corpus"
    out.mkdir(parents=True)
    for name, base in bases:
        ds = pydicom.dcmread(base)
        markers.update(plant(ds, tags, 0))
        item = Dataset()
        markers.update(plant(item, tags, NESTED_OFFSET))
        plant_safe(item)
        ds[NESTED_IN] = DataElement(NESTED_IN, "SQ", [item])
        if not name.startswith("synth"):  # the synthetic files' own values are matched on
            plant_safe(ds)
        path = out / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=False)
        files.append(path)
    return markers, files


def deid(src: Path, dst: Path, tmp: Path, root: Path = ROOT) -> None:
    """`spe deid dicom SRC DST` with its default options, as a user runs it."""
    key_file = tmp / "permit.key"
    key_file.write_bytes(KEY_BYTES)
    done = subprocess.run(
        [sys.executable, "-m", "spe.cli", "deid", "dicom", str(src), str(dst),
         "--key-file", str(key_file), "--workers", "1"],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stdout + done.stderr


def leaked(dst: Path, markers: dict[str, int]) -> dict[str, int]:
    """Markers found in any output, in its bytes or in its decoded text."""
    found: dict[str, int] = {}
    for path in sorted(dst.rglob("*.dcm")):
        data = path.read_bytes()
        text = str(pydicom.dcmread(path))
        for mark, tag in markers.items():
            if mark.encode("ascii") in data or mark in text:
                found[mark] = tag
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int], Path, int]:
    tmp = tmp_path_factory.mktemp("text")
    markers, files = build_corpus(tmp / "src")
    deid(tmp / "src" / "corpus", tmp / "out", tmp)
    return markers, tmp / "out", len(files)


def test_every_text_attribute_outside_the_allow_list_is_planted():
    tags = planted_tags()
    assert len(tags) > 700  # the table's text attributes and the ~480 it does not list
    assert {t for t in unlisted_text.unlisted() if t >> 16} <= tags.keys()
    assert 0x60000022 in tags  # Overlay Description, the case that asked for this rule
    assert not unlisted_text.safe() & tags.keys()


def test_no_planted_text_survives_deidentification(corpus):
    markers, out, count = corpus
    written = list(out.rglob("*.dcm"))
    assert len(written) == count, "every file of the corpus is de-identified, none excluded"
    assert len(markers) > 1400  # not vacuous: both levels, every text attribute
    found = leaked(out, markers)
    names = sorted({DicomDictionary.get(tag, ("",) * 5)[4] or f"{tag:08X}"
                    for tag in found.values()})
    assert not found, f"{len(found)} markers leaked: {names}"


def test_allow_listed_text_attributes_survive(corpus):
    _markers, out, _count = corpus
    expected = safe_values()
    assert expected  # not vacuous
    checked = 0
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        nested = ds[NESTED_IN].value[0]
        for tag, (_vr, value) in expected.items():
            assert nested[tag].value == value
            checked += 1
            if "SAFE" in str(ds.get(tag, "")):  # planted at the top of pydicom's files
                assert ds[tag].value == value
                checked += 1
    assert checked > len(expected) * len(PYDICOM_FILES)


def test_overlay_description_and_unlisted_comments_are_gone(corpus):
    _markers, out, _count = corpus
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert 0x60000022 not in ds
        assert "Radiopharmaceutical" not in ds  # (0018,0031) LO: Type 3, not in the table


def _engine(**options: bool):
    from spe.anonymize.dicom.profile import Deidentifier, Options
    from spe.anonymize.pseudonyms import PermitKey

    return Deidentifier(Options(**options), PermitKey.derive(KEY_BYTES, "p-text"))


def _issuer_and_device() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    ds.StationName = "CT-ROOM-3"
    ds.DeviceSerialNumber = "SN-1234"
    ds.InstitutionName = "Hospital Sint-Jan"
    qualifiers = Dataset()
    qualifiers.LocalNamespaceEntityID = "SINTJAN-RIS"
    qualifiers.UniversalEntityID = "2.16.840.1.113883.2.4.99"
    ds.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    return ds


def test_retain_options_keep_what_they_kept_before_the_text_rule():
    kept = _issuer_and_device()
    _engine(retain_device_identity=True, retain_institution_identity=True).apply(kept)
    assert kept.StationName == "CT-ROOM-3"
    assert kept.DeviceSerialNumber == "SN-1234"
    assert kept.InstitutionName == "Hospital Sint-Jan"
    issuer = kept.IssuerOfPatientIDQualifiersSequence[0]
    assert issuer.LocalNamespaceEntityID == "SINTJAN-RIS"  # UT, not in the table
    assert issuer.UniversalEntityID == "2.16.840.1.113883.2.4.99"
    dropped = _issuer_and_device()
    _engine().apply(dropped)
    assert "IssuerOfPatientIDQualifiersSequence" not in dropped
    assert "StationName" not in dropped
    assert "InstitutionName" not in dropped


def test_text_of_a_public_attribute_pydicom_does_not_know_is_removed():
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    unknown = 0x00181234  # an even (public) group, not in the dictionary
    assert unknown not in DicomDictionary
    ds[unknown] = DataElement(unknown, "LO", "MK9999Q")
    ds[unknown + 1] = DataElement(unknown + 1, "US", 7)
    _engine().apply(ds)
    assert unknown not in ds
    assert ds[unknown + 1].value == 7  # numbers of unknown attributes are not text


def test_a_public_attribute_of_unknown_vr_that_pydicom_does_not_know_is_removed(tmp_path):
    """Read from an implicit VR file, an attribute no dictionary knows has no VR (UN): its
    bytes may be text, so it goes (a known attribute's VR comes from the dictionary)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.3.4"
    unknown = 0x00181234
    ds[unknown] = DataElement(unknown, "LO", "MK9996Q")
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "implicit.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
    read = pydicom.dcmread(path)
    _engine().apply(read)
    assert unknown not in read
    read.save_as(tmp_path / "out.dcm")
    assert b"MK9996Q" not in (tmp_path / "out.dcm").read_bytes()


def test_unlisted_text_of_the_required_type_is_emptied_or_given_a_dummy():
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR: Frame of Reference module
    ds.PositionReferenceIndicator = "MK9998Q"  # (0020,1040) LO, Type 2 there
    ds.Radiopharmaceutical = "MK9997Q"  # (0018,0031) LO, not in the MR IOD
    _engine().apply(ds)
    assert ds.PositionReferenceIndicator == ""
    assert "Radiopharmaceutical" not in ds
