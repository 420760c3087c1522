"""The hub's copy of each job's code, by its SHA-256 (`<data_dir>/job-code`), so that a
result crate can carry the code that ran. Written once when a job is sent; content
addressed, so the same code sent twice is kept once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from spe.settings import Settings


def folder(settings: Settings) -> Path:
    return settings.data_dir / "job-code"


def keep(settings: Settings, code: bytes) -> str:
    digest = hashlib.sha256(code).hexdigest()
    target = folder(settings) / f"{digest}.tar.gz"
    if not target.exists():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(code)
        partial.chmod(0o600)
        partial.replace(target)  # whole or absent, never half-written
    return digest


def load(settings: Settings, digest: str) -> bytes | None:
    """The archive whose SHA-256 is `digest`, if kept and intact."""
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        return None
    try:
        data = (folder(settings) / f"{digest}.tar.gz").read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == digest else None
