"""The analysis environment's Python, as the sandbox needs to see it.

The interpreter named by `SPE_SANDBOX_PYTHON` (default: this process's `sys.executable`) is
asked once where its files live. Its installation (`sys.base_prefix`, bound read-only at
its real path, since interpreters are often linked with an absolute RUNPATH) and, for a
virtual environment, only the environment's `site-packages` are bound; the environment
itself appears at `/venv` with a generated `pyvenv.cfg`, so no host path of the project
(e.g. `/work/...`) is visible inside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

VENV = "/venv"

_PROBE = (
    "import json, sys, sysconfig; p = sysconfig.get_paths(); print(json.dumps({"
    "'executable': sys.executable, 'prefix': sys.prefix, 'base_prefix': sys.base_prefix,"
    "'exec_prefix': sys.exec_prefix, 'base_exec_prefix': sys.base_exec_prefix,"
    "'purelib': p['purelib'], 'platlib': p['platlib'],"
    "'version': '%d.%d' % sys.version_info[:2]}))"
)


class InterpreterError(RuntimeError):
    """The configured interpreter cannot be used in the sandbox."""


@dataclass(frozen=True)
class Interpreter:
    """Where the interpreter's files are on the host and how the sandbox shows them."""

    command: str  # the interpreter's path inside the sandbox
    ro_binds: tuple[tuple[str, str], ...]  # (host path, sandbox path)
    symlinks: tuple[tuple[str, str], ...]  # (target, sandbox path)
    pyvenv_cfg: str | None  # contents of /venv/pyvenv.cfg, for a virtual environment
    version: str


def configured_python() -> str:
    return os.environ.get("SPE_SANDBOX_PYTHON") or sys.executable


def _facts(python: str) -> dict:
    if os.path.realpath(python) == os.path.realpath(sys.executable) and \
            os.path.abspath(python) == os.path.abspath(sys.executable):
        import sysconfig

        paths = sysconfig.get_paths()
        return {"executable": sys.executable, "prefix": sys.prefix,
                "base_prefix": sys.base_prefix, "exec_prefix": sys.exec_prefix,
                "base_exec_prefix": sys.base_exec_prefix, "purelib": paths["purelib"],
                "platlib": paths["platlib"],
                "version": f"{sys.version_info[0]}.{sys.version_info[1]}"}
    try:
        out = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True,
                             timeout=30, env={"PATH": "/usr/bin:/bin"}, check=True).stdout
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise InterpreterError(f"cannot run the sandbox interpreter {python}: {exc}") from None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@lru_cache(maxsize=8)
def resolve(python: str) -> Interpreter:
    """Probe `python` (once per path) and work out the binds for it."""
    if not os.path.isabs(python):
        raise InterpreterError(f"the sandbox interpreter must be an absolute path: {python}")
    facts = _facts(python)
    real_exe = os.path.realpath(facts["executable"])
    bases = []
    for key in ("base_prefix", "base_exec_prefix"):
        real = os.path.realpath(facts[key])
        if real in ("/", "/usr", "/usr/local") or _under(real, "/usr"):
            continue  # /usr is bound anyway; never bind the root
        if not any(_under(real, b) for b in bases):
            bases.append(real)
    binds = [(b, b) for b in bases]
    symlinks: list[tuple[str, str]] = []
    cfg_text = None
    prefix = os.path.realpath(facts["prefix"])
    is_venv = facts["prefix"] != facts["base_prefix"]
    if is_venv:
        cfg = Path(facts["prefix"]) / "pyvenv.cfg"
        try:
            lines = cfg.read_text().splitlines()
        except OSError as exc:
            raise InterpreterError(f"cannot read {cfg}: {exc}") from None
        out = []
        for line in lines:
            key, _, value = line.partition("=")
            key = key.strip().lower()
            if key == "command":
                continue
            if key == "home":
                line = f"home = {os.path.realpath(value.strip())}"
            out.append(line)
        cfg_text = "\n".join(out) + "\n"
        for key in ("purelib", "platlib"):
            host = os.path.realpath(facts[key])
            if not os.path.isdir(host):
                continue
            inside = (VENV + "/" + os.path.relpath(host, prefix) if _under(host, prefix)
                      else host)
            if (host, inside) not in binds:
                binds.append((host, inside))
        command = f"{VENV}/bin/python"
        if _under(real_exe, prefix):  # a venv made with --copies: bind the copy itself
            binds.append((real_exe, command))
        else:
            symlinks.append((real_exe, command))
    else:
        command = real_exe
        if not _under(real_exe, "/usr") and not any(_under(real_exe, b) for b in bases):
            binds.append((real_exe, real_exe))
    return Interpreter(command=command, ro_binds=tuple(binds), symlinks=tuple(symlinks),
                       pyvenv_cfg=cfg_text, version=facts["version"])
