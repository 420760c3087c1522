"""Progress of long CLI work (`spe synth`, `spe node sync`, `spe catalogue harvest`): the
commands run as a user runs them, with stderr a pipe (as in CI or a log), so the progress
comes as plain lines with no control characters; and the callbacks the domain functions
take count monotonically up to their total."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.node.orthanc_process import free_port
from gateway.node.service import run_sync
from gateway.node.sync import SyncProgress
from spe.cli.progress import PlainLines
from spe.synth import generate

# Anything but printable text and newlines: ANSI escapes, carriage returns, cursor moves.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def spe(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPE_DATA_DIR": str(tmp / "data"), "SPE_ENVIRONMENT": "development",
           "TERM": "xterm-256color", "COLUMNS": "120"}
    for name in ("SPE_DATABASE_URL", "SPE_NODE_DICOM", "SPE_NODE_FHIR", "SPE_NODE_ID",
                 "FORCE_COLOR", "SPE_PROGRESS_INTERVAL"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "spe.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def lines_of(err: str, prefix: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("progress")
    out = tmp / "synth"
    return out, spe("synth", "--out", str(out), "--institutions", "1", "--patients", "20",
                    tmp=tmp)


def test_spe_synth_prints_patients_written_per_institution(synth_run):
    _, result = synth_run
    assert result.returncode == 0, result.stderr
    lines = lines_of(result.stderr, "synth site-a:")
    assert lines, result.stderr
    assert lines[0].startswith("synth site-a: 1/20")
    assert lines[-1] == "synth site-a: 20/20 (100%) patients written"
    assert not CONTROL.search(result.stderr), repr(result.stderr[:300])


def test_spe_node_sync_prints_files_indexed_of_the_total_and_the_skipped(synth_run, tmp_path):
    out, _ = synth_run
    site = out / "site-a"
    dicom = tmp_path / "dicom"
    subprocess.run(["cp", "-r", str(site / "dicom"), str(dicom)], check=True)
    (dicom / "broken.dcm").write_bytes(b"not a DICOM file")
    files = sum(1 for p in dicom.rglob("*") if p.is_file())
    result = spe("node", "sync", "--database-url", f"sqlite:///{tmp_path / 'node.db'}",
                 "--dicom", f"folder:{dicom}", "--fhir", f"ndjson:{site / 'fhir'}",
                 tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    dicom_lines = lines_of(result.stderr, "sync dicom:")
    assert dicom_lines[0] == f"sync dicom: 0/{files} (0%) files, 0 skipped"
    assert dicom_lines[-1] == f"sync dicom: {files}/{files} (100%) files, 1 skipped"
    fhir_lines = lines_of(result.stderr, "sync fhir:")
    assert fhir_lines
    assert fhir_lines[-1].endswith("(100%) resources, 0 skipped")
    assert not CONTROL.search(result.stderr), repr(result.stderr[:300])


def test_spe_catalogue_harvest_prints_each_nodes_progress(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    result = spe("catalogue", "harvest", "--node", dead, "--token", "t", "--database-url",
                 f"sqlite:///{tmp_path / 'central.db'}", tmp=tmp_path)
    assert result.returncode == 1
    lines = lines_of(result.stderr, f"harvest {dead}:")
    assert lines[0] == f"harvest {dead}: 0/3 (0%), fetching descriptors"
    assert lines[-1].startswith(f"harvest {dead}: 3/3 (100%), failed: ")
    assert "unreachable" in lines[-1]
    assert not CONTROL.search(result.stderr), repr(result.stderr[:300])


def test_the_synth_callback_counts_each_institutions_patients_up_to_the_total(tmp_path):
    calls: list[tuple[str, int, int]] = []
    generate(tmp_path, institutions=2, patients=5, seed=3,
             progress=lambda label, done, total: calls.append((label, done, total)))
    labels = sorted({label for label, _, _ in calls})
    assert len(labels) == 2
    for label in labels:
        done = [d for lbl, d, _ in calls if lbl == label]
        assert done == sorted(done)
        assert done[-1] == 5
        assert {t for lbl, _, t in calls if lbl == label} == {5}


def test_the_sync_callback_counts_up_to_each_stages_total(synth_run, tmp_path):
    out, _ = synth_run
    site = out / "site-a"
    steps: list[SyncProgress] = []
    run_sync(f"sqlite:///{tmp_path / 'node.db'}", dicom=f"folder:{site / 'dicom'}",
             fhir=f"ndjson:{site / 'fhir'}", progress=steps.append)
    files = sum(1 for p in (site / "dicom").rglob("*.dcm"))
    lines = sum(1 for f in (site / "fhir").glob("*.ndjson")
                for line in f.read_text().splitlines() if line.strip())
    for stage, total, unit in (("fhir", lines, "resources"), ("dicom", files, "files")):
        mine = [s for s in steps if s.stage == stage]
        assert len(mine) >= 2, stage
        done = [s.done for s in mine]
        assert done == sorted(done), stage
        assert {s.total for s in mine} == {total}, stage
        assert mine[-1].done == total
        assert mine[-1].unit == unit


def test_plain_progress_holds_back_lines_between_the_first_and_the_last():
    written: list[str] = []
    lines = PlainLines(written.append, interval=3600)
    for done in range(1, 101):
        lines.update("work", done, 100, unit="items")
    lines.update("open-ended", 5, None)
    lines.update("open-ended", 9, None)
    lines.close()
    assert written == ["work: 1/100 (1%) items", "work: 100/100 (100%) items",
                       "open-ended: 5", "open-ended: 9"]
