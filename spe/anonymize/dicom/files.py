"""Which files of a folder are DICOM Part-10 candidates (PS3.10), walked in a fixed order.

Shared by the de-identifier's batches and the node's folder source, which both read a
folder of DICOM files; here, in the core, so neither imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

DICOM_SUFFIXES = ("dcm", "dicom")


def is_candidate(name: str) -> bool:
    """Whether a file name looks like a DICOM file this source should read."""
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return True
    return ext.lower() in DICOM_SUFFIXES or ext.isdigit()


def walk(root: Path) -> Iterator[Path]:
    """Candidate files under `root`, depth first, in name order (deterministic)."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from walk(Path(entry.path))
            elif entry.is_file() and is_candidate(entry.name):
                yield Path(entry.path)
        except OSError:
            continue


__all__ = ["DICOM_SUFFIXES", "is_candidate", "walk"]
