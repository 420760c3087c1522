"""The bubblewrap command line of one job: what the job sees, and nothing else."""

from __future__ import annotations

import os
import re
import shutil

from spe.sandbox.interpreter import Interpreter
from spe.sandbox.limits import Limits, MiB

SANDBOX_UID = 1000
SANDBOX_GID = 1000
HOSTNAME = "sandbox"
# Top-level host entries that are usually symlinks into /usr (merged /usr) or hold the
# dynamic loader and libraries.
_LIB_ROOTS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

PASSWD = f"sandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:/scratch:/usr/sbin/nologin\n"
GROUP = f"sandbox:x:{SANDBOX_GID}:\n"


def find_bwrap(setting: str = "") -> str | None:
    return setting or shutil.which("bwrap") or (
        "/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None)


def job_env(interpreter: Interpreter, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The job's whole environment: a fixed minimum, plus `extra` (checked names)."""
    env = {
        "PATH": "/venv/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/scratch",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "MPLCONFIGDIR": "/scratch/.matplotlib",
        "XDG_CACHE_HOME": "/scratch/.cache",
    }
    env.update(interpreter.env)
    for name, value in (extra or {}).items():
        if not _ENV_NAME.match(name) or "\0" in value:
            raise ValueError(f"invalid environment variable for the job: {name!r}")
        env[name] = value
    return env


def build_argv(
    bwrap: str,
    interpreter: Interpreter,
    *,
    sources: dict[str, str],
    entry: str,
    limits: Limits,
    env: dict[str, str],
    passwd_fd: int,
    group_fd: int,
    venv_cfg_fd: int | None,
    seccomp_fd: int | None,
) -> list[str]:
    """bwrap's argv. Every mount is listed here; nothing else of the host is visible.

    `sources` maps each sandbox path of the job's folders (/code, /extract, /output and,
    when given, /scratch) and of the interpreter's binds to where bwrap finds it. `*_fd`
    are read ends of pipes holding the generated /etc/passwd, /etc/group and
    /venv/pyvenv.cfg (bwrap copies them into the sandbox read-only) and the seccomp filter.
    """
    argv = [
        bwrap,
        "--unshare-all",  # user, ipc, pid, net, uts, cgroup: no network at all
        "--unshare-user", "--disable-userns",  # and no user namespace made inside
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
        "--hostname", HOSTNAME,
        "--clearenv",
    ]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in _LIB_ROOTS:
        host = f"/{name}"
        if os.path.islink(host):
            argv += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            argv += ["--ro-bind", host, host]
    for _, dest in interpreter.ro_binds:
        argv += ["--ro-bind", sources[dest], dest]
    for target, dest in interpreter.symlinks:
        argv += ["--symlink", target, dest]
    if venv_cfg_fd is not None:
        argv += ["--perms", "0444", "--ro-bind-data", str(venv_cfg_fd), "/venv/pyvenv.cfg"]
    argv += [
        "--perms", "0444", "--ro-bind-data", str(passwd_fd), "/etc/passwd",
        "--perms", "0444", "--ro-bind-data", str(group_fd), "/etc/group",
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(limits.tmp_mb * MiB), "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",  # bwrap's /dev is an unbounded tmpfs: only /dev/shm is rw
        "--size", str(limits.tmp_mb * MiB), "--tmpfs", "/tmp",
        "--ro-bind", sources["/extract"], "/extract",
        "--ro-bind", sources["/code"], "/code",
    ]
    if "/scratch" not in sources:
        argv += ["--size", str(limits.scratch_mb * MiB), "--perms", "0700",
                 "--tmpfs", "/scratch"]
    else:
        argv += ["--bind", sources["/scratch"], "/scratch"]
    argv += ["--bind", sources["/output"], "/output", "--remount-ro", "/"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    argv += [
        "--chdir", "/scratch",
        "--",
        interpreter.command, f"/code/{entry}",
    ]
    return argv
