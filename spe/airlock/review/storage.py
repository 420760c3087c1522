"""Copying a job's outputs into central storage without following anything.

Only entries the automatic checks did not block are copied, each opened relative to its
directory's descriptor with O_NOFOLLOW and checked to be a regular file; then the copy is
checked again, so the verdicts are about the stored bytes (a file changed between the two
reads cannot slip through), and whatever the second check blocks is deleted.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from spe.airlock import check_outputs
from spe.airlock.report import MAX_PLACES, AirlockReport, worst
from spe.airlock.rules import OutputRules

_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class NotCopied(Exception):
    """The entry is no longer the regular file the check saw."""


def read_regular(root: Path, relative: str, limit: int) -> bytes:
    """The bytes of `root/relative`, never following a link at any level."""
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise NotCopied("not a plain relative path")
    fd = os.open(root, _DIR)
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        file_fd = os.open(parts[-1], _FILE, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            raise NotCopied("not a regular file any more")
        chunks, size = [], 0
        while chunk := os.read(file_fd, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise NotCopied(f"grew over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(file_fd)


def copy_outputs(output_dir: Path, target: Path, rules: OutputRules
                 ) -> tuple[AirlockReport, dict[str, str]]:
    """(the report of the source, merged with the copy's; path -> sha256 of what is stored
    under `target`)."""
    report = check_outputs(output_dir, rules=rules)
    target.mkdir(parents=True, exist_ok=False)
    stored: dict[str, str] = {}
    for entry in report.files:
        if entry.verdict == "blocked" or entry.path.endswith("/"):
            continue
        try:
            data = read_regular(output_dir, entry.path, rules.max_file_bytes)
        except (OSError, NotCopied) as exc:
            entry.flag("blocked", f"could not be copied: {exc}")
            continue
        dest = target / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        os.chmod(dest, 0o600)
        stored[entry.path] = hashlib.sha256(data).hexdigest()
    again = check_outputs(target, rules=rules)
    for entry in report.files:
        if entry.path not in stored:
            continue
        try:
            copy = again.file(entry.path)
        except KeyError:
            copy = None
        if copy is not None:
            for reason in copy.reasons:
                if reason not in entry.reasons:
                    entry.reasons.append(reason)
            entry.places = (entry.places + [p for p in copy.places
                                            if p not in entry.places])[:MAX_PLACES]
            entry.verdict = worst(entry.verdict, copy.verdict)
        else:
            entry.flag("blocked", "missing from the stored copy")
        if entry.verdict == "blocked":
            (target / entry.path).unlink(missing_ok=True)
            del stored[entry.path]
    return report.finish(), stored
