"""The faster DICOM de-identifier writes the same files, byte for byte, as the one before it.

The reference is `spe/anonymize/dicom` as it was at REFERENCE (before the issue 22 speed-up),
loaded from git into this process under another package name; both run `deidentify_tree` on
one worker over a synthetic site plus every DICOM file pydicom ships (many encodings, IODs,
private tags, compressed pixel data, malformed values), with the same key and options.
"""

from __future__ import annotations

import importlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files

from spe.anonymize.dicom.batch import deidentify_tree
from spe.anonymize.dicom.options import Options
from spe.anonymize.pseudonyms import PermitKey
from spe.synth import generate

REFERENCE = "072590be282ff974dcc16b36517ec528c212c8d5"
ROOT = Path(__file__).resolve().parents[3]
KEY = PermitKey.derive(b"same output test key 0123456789", "p1")
OPTION_SETS = {
    "basic": Options(),
    "retaining": Options(retain_long_modified_dates=True, clean_descriptors=True,
                         retain_device_identity=True, retain_safe_private=True),
}


def _reference_package(tmp: Path):
    """`spe.anonymize.dicom` at REFERENCE, importable as `dicom_reference`."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", REFERENCE,
             "spe/anonymize/dicom"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the reference revision is not in this checkout: {exc}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp / "extract", filter="data")
    package = tmp / "reference" / "dicom_reference"
    shutil.copytree(tmp / "extract" / "spe" / "anonymize" / "dicom", package)
    for source in package.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        source.write_text(re.sub(r"\bspe\.anonymize\.dicom\b", "dicom_reference", text),
                          encoding="utf-8")
    sys.path.insert(0, str(package.parent))
    try:
        return importlib.import_module("dicom_reference.batch")
    finally:
        sys.path.remove(str(package.parent))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("same-output")
    generate(tmp / "synth", institutions=1, patients=4, seed=3)
    tree = tmp / "in"
    shutil.copytree(tmp / "synth", tree / "synth", ignore=shutil.ignore_patterns("fhir"))
    for n, name in enumerate(get_testdata_files()):
        try:
            pydicom.dcmread(name, stop_before_pixels=True)
        except Exception:  # not DICOM (text, JSON, ICC profiles)
            continue
        (tree / "pydicom" / f"{n:03d}").mkdir(parents=True)
        shutil.copyfile(name, tree / "pydicom" / f"{n:03d}" / f"{Path(name).stem}.dcm")
    # files that fail, each in its own way
    whole = next((tree / "synth").rglob("*.dcm")).read_bytes()
    (tree / "broken").mkdir()
    (tree / "broken" / "truncated.dcm").write_bytes(whole[:len(whole) // 2])
    (tree / "broken" / "header-only.dcm").write_bytes(whole[:200])
    (tree / "broken" / "not-dicom.dcm").write_bytes(b"not a DICOM file at all")
    return tree


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _reference_package(tmp_path_factory.mktemp("reference"))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_files_are_byte_identical_to_the_reference_engine(corpus, reference, tmp_path, name):
    options = OPTION_SETS[name]
    old = reference.deidentify_tree(corpus, tmp_path / "old", KEY, options, workers=1)
    new = deidentify_tree(corpus, tmp_path / "new", KEY, options, workers=1)
    old_files, new_files = _files(tmp_path / "old"), _files(tmp_path / "new")
    # not vacuous: most of the corpus is written, some of it excluded or failed
    assert old.done > 100
    assert old.excluded
    assert old.failed
    assert sorted(new_files) == sorted(old_files)
    different = [path for path in old_files if old_files[path] != new_files[path]]
    assert different == []
    assert (new.done, new.excluded, new.failed, new.warnings) == \
        (old.done, old.excluded, old.failed, old.warnings)
