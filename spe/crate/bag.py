"""A crate's packing: one BagIt bag (sha-512 payload and tag manifests, an
`External-Identifier`) in a ZIP, as the Five Safes profile asks (bagit, the Library of
Congress' implementation of RFC 8493, writes and checks the bag).

Unpacking is for untrusted ZIPs: one top-level folder, regular files only, relative names
that stay inside, bounded entries and sizes, all checked before anything is written; then
the bag's own checksums."""

from __future__ import annotations

import io
import stat
import uuid
import zipfile
from pathlib import Path, PurePosixPath

import bagit

MAX_ENTRIES = 2000
MAX_BYTES = 64 * 1024 * 1024


class CrateError(ValueError):
    """The crate is not a bag we can read, or not a Five Safes crate we can run."""


def pack(payload: Path, *, name: str, identifier: str | None = None) -> bytes:
    """The folder `payload` (it becomes the bag's `data/`; bagged in place) as a zipped
    bag whose one top-level folder is `name`."""
    bagit.make_bag(str(payload), checksums=["sha512"], bag_info={
        "External-Identifier": identifier or f"urn:uuid:{uuid.uuid4()}"})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(payload.rglob("*")):
            arc = (PurePosixPath(name) / path.relative_to(payload).as_posix()).as_posix()
            if path.is_dir():
                zf.writestr(arc + "/", b"")
            else:
                zf.write(path, arc)
    return buffer.getvalue()


def unpack(data: bytes, into: Path) -> tuple[Path, str]:
    """The bag's payload folder (`data/`) and its External-Identifier, after every entry
    and the bag's checksums were checked."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise CrateError(f"not a ZIP archive: {exc}") from None
    entries = zf.infolist()
    if len(entries) > MAX_ENTRIES:
        raise CrateError(f"the crate has over {MAX_ENTRIES} entries")
    if sum(e.file_size for e in entries) > MAX_BYTES:
        raise CrateError(f"the crate unpacks to over {MAX_BYTES // (1024 * 1024)} MiB")
    tops = set()
    for entry in entries:
        path = PurePosixPath(entry.filename)
        if (entry.filename.startswith("/") or "\\" in entry.filename
                or any(p in ("..", "") for p in path.parts) or "\x00" in entry.filename):
            raise CrateError(f"unsafe name in the crate: {entry.filename!r}")
        kind = stat.S_IFMT(entry.external_attr >> 16)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise CrateError(f"not a regular file in the crate: {entry.filename!r}")
        tops.add(path.parts[0])
    if len(tops) != 1:
        raise CrateError("the ZIP must hold exactly one folder, the bag")
    zf.extractall(into)
    bag_dir = into / tops.pop()
    try:
        bag = bagit.Bag(str(bag_dir))
        if "sha512" not in bag.algorithms:
            raise CrateError("the bag has no sha-512 payload manifest (manifest-sha512.txt)")
        bag.validate()
    except bagit.BagError as exc:  # BagValidationError is one
        raise CrateError(f"the bag is not valid: {_first_line(exc)}") from None
    identifier = str(bag.info.get("External-Identifier", "")).strip()
    return bag_dir / "data", identifier


def _first_line(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    if details:
        return f"{exc.message}: {details[0]}"[:300]  # type: ignore[attr-defined]
    return str(exc).splitlines()[0][:300] if str(exc) else exc.__class__.__name__
