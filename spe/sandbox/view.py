"""What the runner (root) mounts for an unprivileged bubblewrap to bind.

bubblewrap, started as the job's own uid, resolves every bind source by path, so it cannot
bind a folder that lies under one only root may enter (the interpreter under `/root`, a
node's 0700 data folder). The runner therefore clones each source as a detached mount
(`open_tree`) and, in the child that becomes bubblewrap, attaches them under
`/run/spe-sandbox/view-<uid>/` in a mount namespace of the job's own (`unshare`,
`move_mount`): nothing of it is seen on the host, and it all goes with the job's processes.

The extract and the code are shown through an idmapped mount (`mount_setattr`) on which the
service's files appear as the job's uid: the job reads them though they stay 0600/0700 and
the service's on disk; nothing of a shared, cached extract is chowned or ACL-ed. The job's
output (and a given scratch folder) are its own (chowned by the runner).

Linux 5.12 or later (idmapped mounts); every call is a plain syscall, as a `preexec_fn` needs.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/run/spe-sandbox")

_libc = ctypes.CDLL(None, use_errno=True)
# Syscall numbers of the new mount API: one table for every architecture since Linux 5.1.
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _AT_RECURSIVE, _AT_EMPTY_PATH = 0x1, 0x8000, 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_MOUNT_ATTR_IDMAP = 0x00100000
_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000


class ViewError(OSError):
    """A source could not be prepared for the job (the kernel refused a mount call)."""


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise ViewError(err, f"{what}: {os.strerror(err)}")
    return result


_idmaps: dict[tuple[int, int], int] = {}
_idmaps_lock = threading.Lock()


def _idmap(uid: int, gid: int) -> int:
    """A user namespace mapping the service (uid and gid 0) to the job's uid and gid, for
    idmapped mounts; made once per uid and kept (an fd) for the life of the process."""
    with _idmaps_lock:
        if (uid, gid) in _idmaps:
            return _idmaps[(uid, gid)]
        try:
            holder = subprocess.Popen(["sleep", "30"], preexec_fn=_unshare_user,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ViewError(f"no user namespace for an idmapped mount: {exc}") from None
        try:
            Path(f"/proc/{holder.pid}/uid_map").write_text(f"0 {uid} 1\n")
            Path(f"/proc/{holder.pid}/gid_map").write_text(f"0 {gid} 1\n")
            fd = os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        _idmaps[(uid, gid)] = fd
        return fd


def _unshare_user() -> None:
    _check(_libc.unshare(_CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")


@dataclass
class View:
    """The job's bind sources, cloned as detached mounts; `attach()` in the child."""

    uid: int
    gid: int
    root: Path = field(init=False)
    _mounts: list[tuple[int, bytes]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        # Empty mount points only, kept for the slot's next job (the uid's slot lock is
        # held, so no other runner uses them meanwhile).
        self.root = ROOT / f"view-{self.uid}"
        ROOT.mkdir(mode=0o711, exist_ok=True)
        os.chmod(ROOT, 0o711)  # the job's uid passes through, lists nothing
        self.root.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.root, 0o711)  # whatever the service's umask

    def add(self, source: str, name: str, *, writable: bool = False,
            as_job: bool = False) -> str:
        """Clone `source` (a folder or file) to be attached at `<root>/<name>`; `as_job`:
        its files (the service's) appear as the job's. The path bubblewrap binds from."""
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        for folder in target.relative_to(self.root).parents:  # passable by the job's uid
            os.chmod(self.root / folder, 0o711)
        is_dir = os.path.isdir(source)
        if target.is_dir() != is_dir or not target.exists():
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            target.mkdir() if is_dir else target.touch(mode=0o644)
        fd = _check(_libc.syscall(_SYS_OPEN_TREE, -100, os.fsencode(source),
                                  _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_RECURSIVE),
                    f"open_tree({source})")
        self._mounts.append((fd, os.fsencode(target)))
        attr = _MountAttr(attr_set=_MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV
                          | (0 if writable else _MOUNT_ATTR_RDONLY))
        if as_job:
            attr.attr_set |= _MOUNT_ATTR_IDMAP
            attr.userns_fd = _idmap(self.uid, self.gid)
        _check(_libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH | _AT_RECURSIVE,
                             ctypes.byref(attr), ctypes.sizeof(attr)),
               f"mount_setattr({source})")
        return str(target)

    def attach(self) -> None:
        """In the child, as root: a mount namespace of its own with the sources attached."""
        _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None),
               "mount(/, private)")  # nothing attached here propagates to the host
        for fd, target in self._mounts:
            _check(_libc.syscall(_SYS_MOVE_MOUNT, fd, b"", -100, target,
                                 _MOVE_MOUNT_F_EMPTY_PATH), "move_mount")

    def close(self) -> None:
        """Drop the runner's clones (what the job's namespace attached went with it)."""
        for fd, _ in self._mounts:
            os.close(fd)
        self._mounts.clear()
