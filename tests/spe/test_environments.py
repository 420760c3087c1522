"""The analysis environments as files and as built: every requirements file is a list of
full pins, `make analysis-env` builds one virtual environment per file, a built one holds
exactly its pins, and a node finds what it has built (spe.sandbox.environments)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spe.sandbox import environments
from spe.settings import REPO_ROOT, Settings
from tests.conftest import IN_CI

SPECS = REPO_ROOT / "deploy" / "analysis"
FILES = sorted(SPECS.glob("*/requirements.txt"))


def test_there_are_the_statistics_and_imaging_environments():
    assert {"statistics", "imaging"} <= {f.parent.name for f in FILES}
    imaging = environments.specs(SPECS)["imaging"]
    assert environments.Package("SimpleITK", "2.5.7") in imaging.packages


@pytest.mark.parametrize("path", FILES, ids=[f.parent.name for f in FILES])
def test_every_requirements_line_is_a_full_pin(path: Path):
    lines = [line.strip() for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines  # not vacuous
    unpinned = [line for line in lines
                if line.count("==") != 1 or any(c in line for c in "<>~!;@ [")]
    assert unpinned == []
    spec = environments.parse_requirements(path.parent.name, path.read_text())
    assert spec.description
    assert len(spec.packages) == len(lines)
    names = [p.name.lower() for p in spec.packages]
    assert len(set(names)) == len(names), "a package pinned twice"


@pytest.mark.parametrize("line", ["numpy>=2", "numpy", "-e .", "--index-url http://x",
                                  "numpy==2.*", "numpy==2 ; python_version<'3.12'",
                                  "git+https://example.org/x.git"])
def test_a_line_that_is_not_a_full_pin_is_refused(line: str):
    with pytest.raises(environments.SpecError, match="not a full pin"):
        environments.parse_requirements("x", f"# Description: x\nscipy==1.17.1\n{line}\n")


def test_the_makefile_builds_every_environment_from_its_pins_alone(tmp_path: Path):
    """`make -n` shows what `make analysis-env` runs: a fresh venv per requirements file,
    installed with --no-deps from that file."""
    out = subprocess.run(["make", "-n", "-B", "analysis-env", f"ANALYSIS={tmp_path}"],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert FILES
    for path in FILES:
        name = path.parent.name
        assert f"rm -rf {tmp_path}/{name}\n" in out, out
        assert f"-m venv {tmp_path}/{name}\n" in out, out
        assert (f"{tmp_path}/{name}/bin/pip install --quiet --no-deps -r "
                f"deploy/analysis/{name}/requirements.txt") in out, out


def _built() -> Path:
    folder = os.environ.get("SPE_ANALYSIS_ENVIRONMENTS", "")
    if not folder or not all((Path(folder) / f.parent.name / "bin" / "python").exists()
                             for f in FILES):
        reason = "the environments are not built (make analysis-env; SPE_ANALYSIS_ENVIRONMENTS)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(folder)


_INSTALLED = ("import importlib.metadata as m, json; print(json.dumps(sorted("
              "[d.metadata['Name'], d.version] for d in m.distributions())))")


@pytest.mark.parametrize("path", FILES, ids=[f.parent.name for f in FILES])
def test_a_built_environment_holds_exactly_its_pins(path: Path):
    """Reproducible: what is installed is the file's pins, no more (pip's own aside)."""
    python = _built() / path.parent.name / "bin" / "python"
    found = json.loads(subprocess.run([str(python), "-I", "-c", _INSTALLED],
                                      capture_output=True, text=True, check=True).stdout)
    norm = lambda n: n.lower().replace("_", "-").replace(".", "-")  # noqa: E731
    installed = {(norm(n), v) for n, v in found if norm(n) not in {"pip", "setuptools"}}
    pinned = {(norm(p.name), p.version)
              for p in environments.parse_requirements(path.parent.name,
                                                       path.read_text()).packages}
    assert installed == pinned


def test_a_node_finds_the_environments_it_has_built(tmp_path: Path):
    for name in ("statistics", "imaging", "Bad", "no-python"):
        (tmp_path / name / "bin").mkdir(parents=True)
        if name != "no-python":
            (tmp_path / name / "bin" / "python").symlink_to(sys.executable)
    found = environments.installed(Settings(analysis_environments=tmp_path,
                                            sandbox_python=""))
    assert found == {"statistics": str(tmp_path / "statistics" / "bin" / "python"),
                     "imaging": str(tmp_path / "imaging" / "bin" / "python")}
    # SPE_SANDBOX_PYTHON is the default environment's, as it was before there were more.
    found = environments.installed(Settings(analysis_environments=tmp_path,
                                            sandbox_python="/opt/analysis/bin/python"))
    assert found["statistics"] == "/opt/analysis/bin/python"
    # Neither: the service's own interpreter, as before; nothing else.
    assert environments.installed(Settings(analysis_environments=None,
                                           sandbox_python="")) == {
        "statistics": sys.executable}


def test_a_malformed_requirements_file_is_refused_not_skipped(tmp_path: Path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "requirements.txt").write_text("numpy>=2\n")
    with pytest.raises(environments.SpecError):
        environments.specs(tmp_path)
