"""What the services keep on disk is theirs alone: files 0600 in folders 0700.

Every `spe` command sets `PRIVATE_UMASK` before it writes anything (spe/cli/main.py), so
databases and their -wal/-shm, staged extracts, job folders, staging reports, the airlock
and keys are created private. What a sandboxed job wrote is reset with `make_private`
after it ends: the job may have opened its outputs up (chmod 0666) from inside.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "PRIVATE_UMASK", "make_private"]

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private(root: Path) -> None:
    """Set every folder under `root` (itself included) 0700 and every file 0600.

    Links are never followed (a job's symlink may name any path of the host): folders are
    walked by descriptor, each entry is looked at without following and opened with
    O_NOFOLLOW before its mode is set. Sockets and the like that cannot be opened are left.
    """
    for _, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        os.fchmod(dir_fd, DIR_MODE)
        for name in [*filenames, *dirnames]:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) and not stat.S_ISFIFO(st.st_mode):
                continue  # folders get theirs as they are walked; links are skipped
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=dir_fd)
            except OSError:
                continue
            try:
                os.fchmod(fd, FILE_MODE)
            finally:
                os.close(fd)
