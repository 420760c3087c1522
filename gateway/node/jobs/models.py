"""A job at a node: its state lives in the node database and survives a restart.

States: queued -> staging -> running -> succeeded | failed | timed_out; queued -> cancelled.
A job whose worker stops sending heartbeats goes back to queued (or ends failed, "worker
lost", once its attempts are used up); see `repository.requeue_stale`.

The job's code is kept as a gzipped tar of its code folder (`pack_code` / `unpack_code`).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from spe.db.base import NodeBase

QUEUED = "queued"
STAGING = "staging"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"

ACTIVE = frozenset({STAGING, RUNNING})
FINAL = frozenset({SUCCEEDED, FAILED, TIMED_OUT, CANCELLED})
STATES = frozenset({QUEUED}) | ACTIVE | FINAL

MAX_CODE_BYTES = 50 * 1024 * 1024  # unpacked size of a job's code folder
MAX_CODE_FILES = 10_000


class NodeJob(NodeBase):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_created_at", "state", "created_at"),
        Index("ix_jobs_pid", "pid"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    pid: Mapped[str] = mapped_column(String(32))  # the permit it runs under
    user_id: Mapped[str] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    entry: Mapped[str] = mapped_column(String(255))  # e.g. "main.py", relative to the code
    code: Mapped[bytes] = mapped_column(LargeBinary)  # tar.gz of the code folder
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)  # spe.sandbox.Limits fields
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=2)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                         nullable=True)
    # {"sandbox": SandboxResult.to_dict(), "airlock": AirlockReport} once the job ran.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")


class CodeArchiveError(ValueError):
    """A job's code archive is malformed, too large or tries to escape its folder."""


def pack_code(directory: Path | str) -> bytes:
    """A gzipped tar of the regular files and folders under `directory` (links refused)."""
    root = Path(directory)
    if not root.is_dir():
        raise CodeArchiveError(f"not a directory: {root}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = Path(dirpath) / name
                mode = os.lstat(path).st_mode
                arcname = path.relative_to(root).as_posix()
                if stat.S_ISLNK(mode):
                    raise CodeArchiveError(f"links are not allowed in job code: {arcname}")
                if stat.S_ISDIR(mode):
                    tar.add(path, arcname=arcname, recursive=False)
                elif stat.S_ISREG(mode):
                    tar.add(path, arcname=arcname, recursive=False)
                else:
                    raise CodeArchiveError(f"not a regular file: {arcname}")
    return buffer.getvalue()


def pack_script(source: str, entry: str = "main.py") -> bytes:
    """A `pack_code` archive of one Python file (the web page's and a pasted script's)."""
    data = source.encode("utf-8")
    info = tarfile.TarInfo(_safe_name(entry))
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _safe_name(name: str) -> str:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        raise CodeArchiveError(f"unsafe path in job code: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise CodeArchiveError(f"unsafe path in job code: {name!r}")
    return "/".join(parts)


def unpack_code(data: bytes, directory: Path | str) -> Path:
    """Extract a `pack_code` archive into `directory` (created; must be empty if present).

    Only regular files and folders, with relative paths that stay inside `directory`;
    links, devices, absolute paths and `..` are refused before anything is written.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise CodeArchiveError(f"the code directory is not empty: {root}")
    real_root = root.resolve()
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CodeArchiveError(f"not a gzipped tar: {exc}") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CodeArchiveError(f"malformed code archive: {exc}") from None
        if len(members) > MAX_CODE_FILES:
            raise CodeArchiveError(f"more than {MAX_CODE_FILES} entries in job code")
        total = 0
        for member in members:
            name = _safe_name(member.name)
            if not (member.isreg() or member.isdir()):
                raise CodeArchiveError(f"only files and folders are allowed: {name!r}")
            target = (real_root / name).resolve()
            if target != real_root and real_root not in target.parents:
                raise CodeArchiveError(f"path escapes the code folder: {name!r}")
            total += member.size if member.isreg() else 0
            if total > MAX_CODE_BYTES:
                raise CodeArchiveError("the job code is too large")
        for member in members:
            name = _safe_name(member.name)
            target = real_root / name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise CodeArchiveError(f"unreadable entry: {name!r}")
            try:
                with source, open(target, "xb") as out:
                    out.write(source.read())
            except FileExistsError:
                raise CodeArchiveError(f"duplicate entry in job code: {name!r}") from None
            os.chmod(target, 0o700 if member.mode & 0o111 else 0o600)  # the node's only
    return root
