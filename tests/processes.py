"""What runs below a process, read from /proc: how the kill tests find a sandbox's processes
and tell whether any of them outlived the process that started it."""

from __future__ import annotations

import os
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def in_sandbox(pid: int, seen: set[int]) -> bool:
    """Whether the job's own process runs under bubblewrap below `pid` (bwrap's argv names
    /code/ too, but a kill then would land while bwrap is still building the sandbox); adds
    the processes below `pid` to `seen`."""
    found = descendants(pid)
    seen.update(found)
    argvs = [cmdline(p).split(b"\0") for p in found]
    bwrap = [a for a in argvs if a[0].endswith(b"bwrap")]
    job = [a for a in argvs if not a[0].endswith(b"bwrap") and any(b"/code/" in x for x in a)]
    return bool(bwrap) and bool(job)


def cmdline(pid: int) -> bytes:
    """Its argv, NUL-separated; empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Whether it runs (a zombie is gone, only unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

