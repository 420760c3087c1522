"""The analysis environment's Python, as the sandbox needs to see it.

The interpreter named by `SPE_SANDBOX_PYTHON` (default: this process's `sys.executable`) is
asked once where its files live. An installation outside `/usr` (pyenv's under `/root`, say)
is shown at `/opt/python` with only what Python needs of it: the binary, the standard
library (`lib/pythonX.Y`) and `libpython` (found through `LD_LIBRARY_PATH`, as the binary's
RUNPATH names the host's folder). A virtual environment's `site-packages` alone is shown at
`/venv`, with a generated `pyvenv.cfg` and `bin/python`. No host folder above them is seen
inside (`/root`, the project's own).
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
BASE = "/opt/python"

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
    env: tuple[tuple[str, str], ...] = ()  # variables the interpreter needs inside


def configured_python(setting: str = "") -> str:
    return setting or sys.executable


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


def _base(facts: dict) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """The base interpreter's command inside, its binds and environment."""
    base = os.path.realpath(facts["base_prefix"])
    real_exe = os.path.realpath(facts["executable"])
    if _under(base, "/usr"):  # Debian's: /usr is shown anyway
        exe = os.path.join(base, "bin", f"python{facts['version']}")
        return (exe if os.path.exists(exe) else real_exe), [], []
    if os.path.realpath(facts["base_exec_prefix"]) != base:
        raise InterpreterError(f"the sandbox interpreter's exec prefix differs from its "
                               f"prefix ({facts['base_exec_prefix']}, {base})")
    version = facts["version"]
    exe = os.path.join(base, "bin", f"python{version}")
    if not os.path.isfile(exe):
        raise InterpreterError(f"the sandbox interpreter has no {exe}")
    lib = Path(base) / "lib"
    binds = [(str(lib / f"python{version}"), f"{BASE}/lib/python{version}"),
             (os.path.realpath(exe), f"{BASE}/bin/python{version}")]
    shared = sorted(p for p in lib.glob(f"libpython{version}*.so*")
                    if p.is_file() and not p.is_symlink())
    binds += [(str(p), f"{BASE}/lib/{p.name}") for p in shared]
    env = [("LD_LIBRARY_PATH", f"{BASE}/lib")] if shared else []
    return f"{BASE}/bin/python{version}", binds, env


@lru_cache(maxsize=8)
def resolve(python: str) -> Interpreter:
    """Probe `python` (once per path) and work out the binds for it."""
    if not os.path.isabs(python):
        raise InterpreterError(f"the sandbox interpreter must be an absolute path: {python}")
    facts = _facts(python)
    base_command, binds, env = _base(facts)
    if facts["prefix"] == facts["base_prefix"]:
        return Interpreter(command=base_command, ro_binds=tuple(binds), symlinks=(),
                           pyvenv_cfg=None, version=facts["version"], env=tuple(env))
    cfg = Path(facts["prefix"]) / "pyvenv.cfg"
    try:
        lines = cfg.read_text().splitlines()
    except OSError as exc:
        raise InterpreterError(f"cannot read {cfg}: {exc}") from None
    out = []
    for line in lines:  # no host path of the environment's is kept
        key = line.partition("=")[0].strip().lower()
        if key in ("home", "executable", "command"):
            continue
        out.append(line)
    out += [f"home = {os.path.dirname(base_command)}", f"executable = {base_command}"]
    prefix = os.path.realpath(facts["prefix"])
    for key in ("purelib", "platlib"):
        host = os.path.realpath(facts[key])
        if not os.path.isdir(host) or not _under(host, prefix):
            continue
        inside = VENV + "/" + os.path.relpath(host, prefix)
        if (host, inside) not in binds:
            binds.append((host, inside))
    return Interpreter(command=f"{VENV}/bin/python", ro_binds=tuple(binds),
                       symlinks=((base_command, f"{VENV}/bin/python"),),
                       pyvenv_cfg="\n".join(out) + "\n", version=facts["version"],
                       env=tuple(env))
