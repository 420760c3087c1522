"""Staging reads and writes each DICOM file once (gateway/node/jobs/staging_once.py) and
gives the files, counts and risk report the two-pass way gave: `deidentify_tree`, then
`deidentify_ndjson`, then layer 3 measured and rewritten in the files (`reference` below,
today's functions as they were composed before)."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pydicom
import pytest

import gateway.node.jobs.staging_once as once
from gateway.node.config import NodeConfig
from gateway.node.jobs import staging
from gateway.node.jobs.staging import stage
from spe.anonymize.dicom.batch import deidentify_tree
from spe.anonymize.fhir_batch import deidentify_ndjson
from spe.anonymize.pseudonyms import PermitKey
from spe.policy.service import make_policy_service
from spe.settings import Settings
from spe.synth import generate

SECRET = "staging-once-test-secret-0123456789abcdef"


@dataclass
class Permit:
    pid: str
    form: str = "pseudonymised"
    status: str = "issued"
    start: date = date(2020, 1, 1)
    end: date = date(2099, 12, 31)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    out = tmp_path_factory.mktemp("synth")
    generate(out, institutions=1, patients=40, seed=11)
    root = out / "site-a"
    dicom = root / "dicom"
    files = sorted(dicom.rglob("*.dcm"))
    (dicom / "junk.dcm").write_bytes(b"not dicom at all")  # failed
    shutil.copy(files[0], dicom / "copy-of-first.dcm")  # same output name, same content
    ds = pydicom.dcmread(files[1])  # same output name, other content: failed
    pixels = bytearray(ds.PixelData)
    pixels[-1] ^= 0xFF
    ds.PixelData = bytes(pixels)
    ds.save_as(dicom / "zz-changed-copy.dcm")
    return root, Settings(data_dir=out / "var", secret_key=SECRET)


def reference(root: Path, settings: Settings, permit: Permit, out: Path) -> dict:
    """The extract as staging built it before: every file written, read back, rewritten."""
    decision = staging._decide(permit, make_policy_service(settings), date.today())
    key = PermitKey.derive(settings.secret_key.get_secret_value(), permit.pid)
    tree = deidentify_tree(root / "dicom", out / "dicom", key, workers=1)
    deidentify_ndjson(root / "fhir", out / "fhir", key, workers=1)
    risk = staging._risk(out / "fhir", out / "dicom", decision)
    return {"risk": risk, "dicom": {"files_in": tree.files, "files_out": tree.done,
                                    "excluded": len(tree.excluded),
                                    "failed": len(tree.failed)}}


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("workers", "hold_bytes"), [(1, once.HOLD_BYTES), (2, once.HOLD_BYTES),
                                                    (1, 0), (2, 300_000)])
def test_one_pass_staging_writes_what_the_two_pass_way_wrote(
        site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, hold_bytes: int):
    root, settings = site
    permit = Permit("P-once")
    expected = reference(root, settings, permit, tmp_path / "ref")
    assert expected["risk"]["reduction"] is not None  # layer 3 rewrote files: not vacuous
    assert expected["risk"]["reduction"]["dicom_rewritten"] > 0
    assert expected["dicom"]["failed"] == 2

    monkeypatch.setattr(once.hold_tree, "__kwdefaults__",
                        {**once.hold_tree.__kwdefaults__, "hold_bytes": hold_bytes})
    node = NodeConfig("site-a", "Site A", "sqlite://", dicom=f"folder:{root / 'dicom'}",
                      fhir=f"ndjson:{root / 'fhir'}")
    staged = stage(permit, node=node, settings=settings, policy=make_policy_service(settings),
                   cache_dir=tmp_path / "cache", data_version="v1", workers=workers)

    ref_files = digests(tmp_path / "ref" / "dicom")
    assert len(ref_files) > 100
    assert digests(staged.path / "dicom") == ref_files
    assert digests(staged.path / "fhir") == digests(tmp_path / "ref" / "fhir")
    assert staged.report["risk"] == expected["risk"]
    counts = {k: staged.report["counts"]["dicom"][k] for k in expected["dicom"]}
    assert counts == expected["dicom"]
    assert not list(staged.path.rglob(".*partial"))


def test_a_dicom_only_site_is_measured_from_the_held_headers(site, tmp_path: Path):
    root, settings = site
    permit = Permit("P-once-dicom")
    dicom_only = tmp_path / "site"
    shutil.copytree(root / "dicom", dicom_only / "dicom")
    (dicom_only / "fhir").mkdir()
    expected = reference(dicom_only, settings, permit, tmp_path / "ref")
    assert expected["risk"]["measured"]
    assert expected["risk"]["records"] > 0
    node = NodeConfig("site-a", "Site A", "sqlite://", dicom=f"folder:{dicom_only / 'dicom'}")
    staged = stage(permit, node=node, settings=settings, policy=make_policy_service(settings),
                   cache_dir=tmp_path / "cache", data_version="v1")
    assert digests(staged.path / "dicom") == digests(tmp_path / "ref" / "dicom")
    assert staged.report["risk"] == expected["risk"]
