"""Analysis environments: the pinned sets of packages a job's code may import, one virtual
environment each, chosen per job by name ("statistics", "imaging", ...).

- What an environment is: `<SPE_ANALYSIS_SPECS_DIR>/<name>/requirements.txt` (the repo's
  deploy/analysis), every line a full pin `name==version`, with a `# Description:` line.
  The files are the source of truth: `make analysis-env` builds each with `--no-deps` from
  its pins alone, the hub lists them (`GET /api/v1/environments`) and takes a job only
  for a name it lists.
- Which a node has built: `<SPE_ANALYSIS_ENVIRONMENTS>/<name>/bin/python`. The default
  environment (`DEFAULT`) is `SPE_SANDBOX_PYTHON` when that is set (what it meant before
  there were several), else its folder's, else the service's own interpreter.
- Which a node runs is its policy's (policies/jobs `allowed_environments`), asked with the
  job's environment and the ones installed: a name outside both is refused.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from spe.settings import Settings

DEFAULT = "statistics"
#: An environment's name: a folder name at the hub and at each node, so a plain word.
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
_NAME = re.compile(NAME_PATTERN)
REQUIREMENTS = "requirements.txt"
DESCRIPTION = "# Description:"
# A full pin as pip writes it (PEP 508 names; a PEP 440 version, local part allowed).
_PIN = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([A-Za-z0-9.+!_-]+)$")


class SpecError(ValueError):
    """A requirements file that is not a list of full pins (nothing is guessed)."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str


@dataclass(frozen=True)
class Spec:
    """One environment as its requirements file states it."""

    name: str
    description: str
    packages: tuple[Package, ...]


def parse_requirements(name: str, text: str) -> Spec:
    """The environment `name` of a requirements file's text: its `# Description:` line
    and its pins. Any line that is neither a comment nor a full pin is refused: an
    environment is what its pins say, so a range or an option would make it vary."""
    description = ""
    packages = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith(DESCRIPTION) and not description:
            description = line.removeprefix(DESCRIPTION).strip()
            continue
        if not line or line.startswith("#"):
            continue
        pin = _PIN.fullmatch(line)
        if pin is None:
            raise SpecError(f"{name}/{REQUIREMENTS} line {number}: not a full pin "
                            f"name==version: {line[:80]!r}")
        packages.append(Package(pin[1], pin[2]))
    if not packages:
        raise SpecError(f"{name}/{REQUIREMENTS}: no packages")
    return Spec(name, description, tuple(sorted(packages, key=lambda p: p.name.lower())))


def specs(folder: Path) -> dict[str, Spec]:
    """Every environment `folder` describes (`<name>/requirements.txt`), by name. A
    malformed file raises `SpecError` rather than drop the environment unnoticed."""
    found: dict[str, Spec] = {}
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return found
    for child in children:
        path = child / REQUIREMENTS
        if not _NAME.fullmatch(child.name) or not path.is_file():
            continue
        found[child.name] = parse_requirements(child.name, path.read_text(encoding="utf-8"))
    return found


def installed(settings: Settings) -> dict[str, str]:
    """The environments this machine has built, name -> interpreter (an absolute path,
    as the sandbox wants it). The default one is always there (see the module's note)."""
    found: dict[str, str] = {}
    folder = settings.analysis_environments
    if folder is not None:
        try:
            children = sorted(Path(folder).iterdir())
        except OSError:
            children = []
        for child in children:
            python = child / "bin" / "python"
            if _NAME.fullmatch(child.name) and python.exists():
                found[child.name] = os.path.abspath(python)
    if settings.sandbox_python:
        found[DEFAULT] = settings.sandbox_python
    elif DEFAULT not in found:
        found[DEFAULT] = sys.executable
    return found


def python_version(python: str) -> str | None:
    """The Python version of a virtual environment's interpreter, from its pyvenv.cfg
    (read, not run: listing environments starts no process); None if not a venv's."""
    cfg = Path(python).parent.parent / "pyvenv.cfg"
    try:
        lines = cfg.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip().lower() in ("version", "version_info"):
            return value.strip() or None
    return None


__all__ = ["DEFAULT", "NAME_PATTERN", "Package", "Spec", "SpecError", "installed",
           "parse_requirements", "python_version", "specs"]
