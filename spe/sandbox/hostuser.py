"""The host user a job runs as: a uid of its own, never root, for as long as the job runs.

Each running job takes a free slot of `SPE_SANDBOX_UID_BASE` + 0..SLOTS-1 (uid and gid the
same), held by a lock file under /run/spe-sandbox that the kernel releases when the runner
dies; a uid that has an account on the machine is never used. While the slot is held, any
process of that uid is the job's: leftovers of a dead runner are killed before the slot is
used, and every process of the uid is killed when the job ends.

Not root (a developer's laptop) or a base of 0: the job runs as the service's own user,
and the job's record says so; production refuses that.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spe.sandbox.view import ROOT

SLOTS = 1000
CLEAN, IN_USE = b"0", b"1"


@dataclass(frozen=True)
class HostUser:
    uid: int
    gid: int
    dedicated: bool  # a uid of the job's own (False: the service's own user)
    why: str = ""  # why not, for the service's own user

    def describe(self) -> str:
        if self.dedicated:
            return f"uid {self.uid} (the job's own, not root)"
        return f"uid {self.uid}, the service's own user: no uid of the job's own ({self.why})"


def processes_of(uid: int) -> list[int]:
    """Live processes whose real uid is `uid`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        real = status.partition("\nUid:")[2].split(None, 1)[:1]
        state = status.partition("\nState:")[2].split(None, 1)[:1]
        if real == [str(uid)] and state not in (["Z"], ["X"]):
            found.append(int(name))
    return found


def kill_all(uid: int, timeout: float = 5.0) -> bool:
    """SIGKILL every process of `uid` until none is left; True when none is."""
    deadline = time.monotonic() + timeout
    while True:
        pids = processes_of(uid)
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@contextmanager
def job_user(uid_base: int) -> Iterator[HostUser]:
    """A host user for one job, held until the block ends (then nothing of it runs)."""
    if os.geteuid() != 0 or uid_base == 0:
        why = "the service does not run as root" if os.geteuid() else "SPE_SANDBOX_UID_BASE=0"
        yield HostUser(os.getuid(), os.getgid(), dedicated=False, why=why)
        return
    ROOT.mkdir(mode=0o711, exist_ok=True)
    for slot in range(SLOTS):
        uid = uid_base + slot
        fd = os.open(ROOT / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        # The lock file says whether its last holder ended cleanly; if not (it died), its
        # job may have left processes of the uid: kill them first.
        if _has_account(uid) or (os.pread(fd, 1, 0) != CLEAN and not kill_all(uid)):
            os.close(fd)
            continue
        os.pwrite(fd, IN_USE, 0)
        try:
            yield HostUser(uid, uid, dedicated=True)
        finally:
            try:
                if kill_all(uid):
                    os.pwrite(fd, CLEAN, 0)
            finally:
                os.close(fd)  # releases the slot
        return
    raise OSError(f"no free sandbox uid in {uid_base}..{uid_base + SLOTS - 1}")
