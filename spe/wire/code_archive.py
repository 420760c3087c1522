"""The job code archive both sides read: a gzipped tar of the job's code folder, regular
files and folders only, relative paths, at most `MAX_CODE_BYTES` unpacked in
`MAX_CODE_FILES` entries (spe.wire.jobs). `pack_code` / `pack_script` write one (the CLI,
the hub for a pasted script), `unpack_code` reads one at a node's worker.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spe.wire.jobs import MAX_CODE_BYTES, MAX_CODE_FILES


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


@contextmanager
def _checked(data: bytes) -> Iterator[tuple[tarfile.TarFile, list[tuple[str, tarfile.TarInfo]]]]:
    """The archive open, with its entries as (safe name, member), once every entry has
    passed the checks both readers share: a gzipped tar, at most `MAX_CODE_FILES` entries
    of files and folders only, safe relative names, at most `MAX_CODE_BYTES` in all."""
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
        entries, total = [], 0
        for member in members:
            name = _safe_name(member.name)
            if not (member.isreg() or member.isdir()):
                raise CodeArchiveError(f"only files and folders are allowed: {name!r}")
            total += member.size if member.isreg() else 0
            if total > MAX_CODE_BYTES:
                raise CodeArchiveError("the job code is too large")
            entries.append((name, member))
        yield tar, entries


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
    with _checked(data) as (tar, entries):
        for name, _ in entries:
            target = (real_root / name).resolve()
            if target != real_root and real_root not in target.parents:
                raise CodeArchiveError(f"path escapes the code folder: {name!r}")
        for name, member in entries:
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


def read_code(data: bytes) -> dict[str, bytes]:
    """The regular files of a `pack_code` archive, in memory ({path: bytes}, sorted), for a
    reviewer to read; refused as `unpack_code` refuses (links, unsafe paths, too large)."""
    files: dict[str, bytes] = {}
    with _checked(data) as (tar, entries):
        for name, member in entries:
            if member.isdir():
                continue
            source = tar.extractfile(member)
            if source is None or name in files:
                raise CodeArchiveError(f"unreadable or duplicate entry: {name!r}")
            with source:
                files[name] = source.read()
    return dict(sorted(files.items()))


__all__ = ["CodeArchiveError", "pack_code", "pack_script", "read_code", "unpack_code"]
