"""The vendored PS3.3 Types (`data/iod-types.json`) and the choice they decide (PS3.15 E.1.1)."""

from __future__ import annotations

from importlib import metadata

import pytest
from pydicom.uid import ComprehensiveSRStorage, CTImageStorage, MRImageStorage

from spe.anonymize.dicom import generate_iod_types, iod

REFERENCED_STUDY = 0x00081110
VERIFYING_OBSERVER = 0x0040A073
CONTENT = 0x0040A730


def test_vendored_types_match_what_the_generator_writes_from_dicom_standard():
    try:
        source = generate_iod_types.standard_dir()
    except metadata.PackageNotFoundError:
        pytest.skip("dicom-standard is not installed (a generator tool, not a dependency)")
    written = generate_iod_types.render(generate_iod_types.build(source))
    assert written == generate_iod_types.TARGET.read_text(encoding="utf-8")


def test_types_are_those_of_the_iods_modules():
    mr = iod.types_for(MRImageStorage)
    assert mr[REFERENCED_STUDY][0] == "3"  # General Study
    assert mr[0x00100020][0] == "2"  # Patient ID, Patient module
    sr = iod.types_for(ComprehensiveSRStorage)
    kind, items = sr[VERIFYING_OBSERVER]
    assert kind == "1C"  # SR Document General
    assert {tag: t for tag, (t, _) in items.items()} == {
        0x0040A075: "1", 0x0040A027: "1", 0x0040A030: "1", 0x0040A088: "2"}
    content_kind, content_items = sr[CONTENT]
    assert content_kind == "1C"
    assert content_items[0x0040A010][0] == "1"  # Relationship Type
    assert iod.types_for(CTImageStorage + "\0") is iod.types_for(CTImageStorage)
    assert iod.types_for("1.2.3.4") is None


@pytest.mark.parametrize(("code", "kind", "sequence", "action"), [
    ("X/Z", "3", True, "X"),  # Referenced Study Sequence in General Study
    ("X/Z", "2", True, "Z"),
    ("X/Z", "1", False, "Z"),  # Z is the closest a Type 1 gets without D
    ("X/D", "2", False, "D"),  # X/D on Type 2: no Z allowed, D stays valid
    ("Z/D", "3", False, "Z"),
    ("Z/D", "1C", False, "D"),
    ("X/Z/D", "1", False, "D"),
    ("X/Z/D", "2C", False, "Z"),
    ("X/Z/D", "3", True, "X"),
    ("X/Z/D", None, False, "D"),  # unknown class: a dummy is valid at any Type
    ("X/Z/D", None, True, "X"),  # a sequence of an unknown class is removed
    ("X/Z", None, True, "X"),
    ("D", "3", False, "D"),  # not combined: as the table says
])
def test_combined_codes_follow_the_type(code, kind, sequence, action):
    assert iod.choose(code, kind, sequence) == action


def test_every_sop_class_has_an_iod_and_every_iod_a_tree():
    data = iod._data()
    assert data["sop_classes"]
    assert set(data["sop_classes"].values()) <= set(data["iods"])
    assert set(data["iods"].values()) == set(range(len(data["trees"])))
