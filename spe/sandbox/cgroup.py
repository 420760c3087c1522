"""A pids cgroup and a memory cgroup per job (cgroup v1 controllers, or cgroup v2 where
delegated).

RLIMIT_NPROC counts processes per real uid (and never binds uid 0, the development
fallback's user when the service is root). A pids cgroup counts the job's processes exactly
(`pids.max`), counts the refusals (`pids.events`), and lists every process of the job for
the final sweep.

RLIMIT_AS bounds each process's address space, not the job's: 64 processes of a job with
`memory_mb` 2048 could hold 128 GB. A memory cgroup bounds them together (v1
`memory.limit_in_bytes` and, with swap accounting, `memory.memsw.limit_in_bytes`; v2
`memory.max` and `memory.swap.max` 0): the kernel's OOM killer ends the job's processes
past it, and `oom_kill` counts them.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Self


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) of the cgroup mounts."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rest = left.split(), right.split()
                if len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
                    out.append((fields[4], rest[0], rest[2]))
    except OSError:
        pass
    return out


def _own_paths() -> dict[str, str]:
    """controller ('' for v2) -> this process's cgroup path."""
    out = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    out[c] = path
    except OSError:
        pass
    return out


def _candidates(controller: str) -> list[Path]:
    """Where this process may make child cgroups with `controller`."""
    own = _own_paths()
    found = []
    for point, fstype, options in _mounts():
        if fstype == "cgroup" and controller in options.split(",") and controller in own:
            found.append(Path(point) / own[controller].lstrip("/"))
        elif fstype == "cgroup2" and "" in own:
            parent = Path(point) / own[""].lstrip("/")
            try:
                if controller in (parent / "cgroup.subtree_control").read_text().split():
                    found.append(parent)
            except OSError:
                continue
    return found


def _counter(path: Path, key: str) -> int:
    """The value of `key` in a flat-keyed cgroup file ("max 3", "oom_kill 1")."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


PREFIX = "spe-sandbox-"


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class JobCgroup:
    """One job's cgroup of one controller; `create` returns None where none can be made."""

    controller = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.procs_file = str(path / "cgroup.procs")

    @classmethod
    def _make(cls, limits: Callable[[Path], None]) -> Self | None:
        """A new cgroup under the first parent that takes one, `limits(path)` written."""
        for parent in _candidates(cls.controller):
            # The creating process's pid in the name: its orphans can be found (reap).
            path = parent / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
            try:
                path.mkdir()
            except OSError:
                continue
            try:
                limits(path)
                return cls(path)
            except OSError:
                try:
                    path.rmdir()
                except OSError:
                    pass
        return None

    @classmethod
    def reap_orphans(cls) -> int:
        """Kill what is left in the cgroups of processes that died while running a job (a
        worker killed mid-job: bubblewrap's parent-death signal does not always reach every
        process of the sandbox); how many cgroups were emptied and removed."""
        reaped = 0
        for parent in _candidates(cls.controller):
            try:
                names = [p.name for p in parent.iterdir() if p.name.startswith(PREFIX)]
            except OSError:
                continue
            for name in names:
                owner = name[len(PREFIX):].split("-", 1)[0]
                if not owner.isdigit() or _running(int(owner)):
                    continue
                orphan = cls(parent / name)
                if orphan.kill_all():
                    orphan.remove()
                    reaped += 1
        return reaped

    def enter(self) -> None:
        """Move the calling process in (for `preexec_fn`: plain syscalls only)."""
        fd = os.open(self.procs_file, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in Path(self.procs_file).read_text().split()]
        except (OSError, ValueError):
            return []

    def kill_all(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup until it is empty; True when it is."""
        kill_file = self.path / "cgroup.kill"  # cgroup v2, Linux 5.14+
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            try:
                kill_file.write_text("1")
            except OSError:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.01)

    def remove(self) -> None:
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY while the last process is being reaped
                time.sleep(0.02)


class PidsCgroup(JobCgroup):
    controller = "pids"

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        return cls._make(lambda path: (path / "pids.max").write_text(str(max_pids)))

    def refusals(self) -> int:
        """How many forks pids.max refused."""
        return _counter(self.path / "pids.events", "max")


class MemoryCgroup(JobCgroup):
    controller = "memory"

    @classmethod
    def create(cls, max_bytes: int) -> MemoryCgroup | None:
        def limits(path: Path) -> None:
            if (path / "memory.max").exists():  # v2
                (path / "memory.max").write_text(str(max_bytes))
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
                return
            (path / "memory.limit_in_bytes").write_text(str(max_bytes))
            if (path / "memory.memsw.limit_in_bytes").exists():  # swap counted too
                (path / "memory.memsw.limit_in_bytes").write_text(str(max_bytes))

        return cls._make(limits)

    def oom_kills(self) -> int:
        """How many of the job's processes the OOM killer ended at the limit."""
        v2 = self.path / "memory.events"
        if v2.exists():
            return _counter(v2, "oom_kill")
        return _counter(self.path / "memory.oom_control", "oom_kill")


def reap_orphans() -> int:
    """`JobCgroup.reap_orphans` for every controller the sandbox uses."""
    return PidsCgroup.reap_orphans() + MemoryCgroup.reap_orphans()
