"""A folder of DICOM Part-10 files (PS3.10) as a `DicomSource`.

Reads the header of each file only, up to the last attribute the records need, and groups
the instances into series and studies by their UIDs. Studies come out sorted by Study
Instance UID and their series by Series Instance UID, so two walks of the same folder give
the same records whatever the file system's order.

Which files are read: `*.dcm` / `*.dicom` (any case) and files without an extension (or
with an all-digit "extension", as UID-named files have); the Part-10 header with its
"DICM" prefix (PS3.10 7.1) is required. Hidden files, `DICOMDIR` and files with any other
extension are ignored. A candidate that cannot be read comes back as `Skipped`.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag, Tag

from gateway.node.sources import dicom_values as dv
from gateway.node.sources.base import Progress, Skipped, SourceError, StudyRecord
from spe.anonymize.dicom.files import walk

BATCH = 256  # files per task of the reading processes
MAX_WORKERS = 8

_STUDY_UID, _SERIES_UID, _SOP_UID = 0x0020000D, 0x0020000E, 0x00080018
_SERIES_KEYWORDS = [k for k in dv.SERIES_TAGS if k != "NumberOfSeriesRelatedInstances"]
HEADER_TAGS: list[int] = sorted(
    int(Tag(k)) for k in ["SOPInstanceUID", *dv.STUDY_TAGS, *_SERIES_KEYWORDS])
"""The attributes read from each file (Specific Character Set is always added by pydicom).
Plain ints rather than BaseTag: pydicom tests every element against this set."""
_UID_TAGS: list[int] = [_SOP_UID, _STUDY_UID]
_SAFE_UID = re.compile(r"[0-9][0-9.]{0,63}")


def _stop_after(last: int) -> Callable[[BaseTag, str | None, int], bool]:
    gt = int.__gt__  # BaseTag's own comparison is pure Python, and this runs per element

    def stop(tag: BaseTag, vr: str | None, length: int) -> bool:
        return gt(tag, last)

    return stop


_STOPS = {id(HEADER_TAGS): _stop_after(max(HEADER_TAGS)),
          id(_UID_TAGS): _stop_after(max(_UID_TAGS))}


def read_header(path: Path, tags: list[int] = HEADER_TAGS) -> Any:
    """The given attributes of one Part-10 file, and nothing after the last of them.

    This is `pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)`, except
    that reading stops at the first top-level attribute past the last wanted tag, so the
    rest of the header (and the pixel data) is never parsed.
    """
    stop = _STOPS.get(id(tags)) or _stop_after(max(tags))
    with open(path, "rb") as fp:
        return read_partial(fp, stop_when=stop, specific_tags=tags)  # type: ignore[arg-type]


def _uid(ds: Any, tag: int) -> str | None:
    """A UI value straight from the raw element. UIDs are ASCII (PS3.5 9.1), so this skips
    pydicom's value conversion and validation, a large share of the cost per file."""
    elem = ds.get_item(tag)
    value = elem.value if elem is not None else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return dv.text(value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InvalidDicomError):
        return "not a DICOM Part-10 file (no 'DICM' prefix after the preamble)"
    if isinstance(exc, OSError):
        return f"unreadable: {exc.strerror or exc}"
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"malformed DICOM header: {type(exc).__name__}: {message}"[:200]


@dataclass
class _Read:
    """What one file contributed: its UIDs, and the study or series attributes when it was
    the first file of its study or series in its batch; or why it was skipped."""

    path: str
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    study_attrs: dict[str, Any] | None = None
    series_attrs: dict[str, Any] | None = None
    error: str | None = None


def _read_batch(paths: list[str]) -> list[_Read]:
    """Read the headers of `paths` (in order). Runs in worker processes for big folders."""
    studies: set[str] = set()
    series: set[str] = set()
    out: list[_Read] = []
    with warnings.catch_warnings():
        # Malformed values are pydicom warnings; they must not flood the log.
        warnings.simplefilter("ignore")
        for path in paths:
            read = _Read(path)
            try:
                ds = read_header(Path(path))
                read.study_uid = _uid(ds, _STUDY_UID)
                read.series_uid = _uid(ds, _SERIES_UID)
                read.sop_uid = _uid(ds, _SOP_UID)
                if not (read.study_uid and read.series_uid):
                    out.append(read)  # skipped by the caller: it must not claim its study
                    continue
                if read.study_uid not in studies:
                    studies.add(read.study_uid)
                    read.study_attrs = dv.from_dataset(ds, dv.STUDY_TAGS)
                if (read.study_uid, read.series_uid) not in series:
                    series.add((read.study_uid, read.series_uid))
                    read.series_attrs = dv.from_dataset(ds, _SERIES_KEYWORDS)
            # A third-party parser on untrusted files: any failure is this file's problem.
            except Exception as exc:
                read.error = _reason(exc)
            out.append(read)
    return out


def _batches(paths: Iterable[Path], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for path in paths:
        batch.append(str(path))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def default_workers() -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


@dataclass
class _Series:
    attrs: dict[str, Any]
    instances: set[str] = field(default_factory=set)


@dataclass
class _Study:
    attrs: dict[str, Any]
    series: dict[str, _Series] = field(default_factory=dict)
    files: list[tuple[Path, str]] = field(default_factory=list)


class DicomFolderSource:
    """Studies from a folder of DICOM files, read at header level only.

    Header parsing is pure Python and CPU-bound, so a big folder is read by `workers`
    processes (default: one per core, at most 8) in batches of `BATCH` files; a small one
    in this process. Results are merged in walk order, so the records are the same either
    way.
    """

    def __init__(self, root: Path | str, name: str = "folder",
                 workers: int | None = None) -> None:
        self.root = Path(root)
        self.name = name
        self.workers = workers or default_workers()
        # study UID -> [(file, SOP Instance UID)], from the last full walk; used by retrieve.
        self._files: dict[str, list[tuple[Path, str]]] | None = None

    def __repr__(self) -> str:
        return f"DicomFolderSource({str(self.root)!r}, name={self.name!r})"

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise SourceError(f"DICOM folder {self.root} does not exist or is not a folder")

    progress_unit = "files"

    def count(self) -> int:
        """The files `studies()` will read (for its progress)."""
        self._check_root()
        return sum(1 for _ in walk(self.root))

    def _where(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _reads(self) -> Iterator[list[_Read]]:
        batches = _batches(walk(self.root), BATCH)
        first = next(batches, None)
        if first is None:
            return
        second = next(batches, None)
        if second is None or self.workers < 2:  # small folder: no processes to start
            yield _read_batch(first)
            if second is not None:
                yield _read_batch(second)
                for batch in batches:
                    yield _read_batch(batch)
            return
        # fork is cheap (no re-import) but unsafe with other threads running.
        method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
        with ProcessPoolExecutor(self.workers, mp_context=get_context(method)) as pool:
            yield from pool.map(_read_batch, itertools.chain([first, second], batches))

    def studies(self, progress: Progress | None = None) -> Iterator[StudyRecord | Skipped]:
        """Every study under the folder; unreadable files come first, as `Skipped`."""
        self._check_root()
        studies: dict[str, _Study] = {}
        for batch in self._reads():
            for read in batch:
                path = Path(read.path)
                skipped = None
                if read.error:
                    skipped = Skipped(self._where(path), read.error)
                elif not read.study_uid or not read.series_uid:
                    missing = "StudyInstanceUID" if not read.study_uid else "SeriesInstanceUID"
                    skipped = Skipped(self._where(path), f"no {missing} in the header")
                else:
                    sop_uid = read.sop_uid or self._where(path)
                    study = studies.get(read.study_uid)
                    if study is None:
                        study = studies[read.study_uid] = _Study(read.study_attrs or {})
                    if read.series_uid not in study.series:
                        study.series[read.series_uid] = _Series(read.series_attrs or {})
                    study.series[read.series_uid].instances.add(sop_uid)
                    study.files.append((path, sop_uid))
                if skipped is not None:
                    yield skipped
            if progress:
                progress(len(batch))
        self._files = {uid: s.files for uid, s in studies.items()}
        for uid in sorted(studies):
            study = studies[uid]
            series = tuple(dv.series_record(s.attrs, instance_count=len(s.instances))
                           for s in study.series.values())
            yield dv.study_record(study.attrs, series)

    def _study_files(self, study_uid: str) -> list[tuple[Path, str]]:
        if self._files is not None:
            files = self._files.get(study_uid, [])
            if all(path.is_file() for path, _ in files):
                return files
        found: list[tuple[Path, str]] = []
        for path in walk(self.root):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = read_header(path, _UID_TAGS)
                    if _uid(ds, _STUDY_UID) == study_uid:
                        found.append((path, _uid(ds, _SOP_UID) or ""))
            except Exception:  # unreadable files were reported by studies()
                continue
        return found

    def retrieve(self, study_uid: str, dest: Path) -> list[Path]:
        """Copy the study's files to `dest` as `<SOPInstanceUID>.dcm`; [] if unknown.

        Uses the file list of the last `studies()` walk when it is still valid, otherwise
        walks the folder reading only the UIDs.
        """
        self._check_root()
        dest = Path(dest)
        written: list[Path] = []
        seen: set[str] = set()
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for path, sop_uid in self._study_files(study_uid):
                key = sop_uid if _SAFE_UID.fullmatch(sop_uid) else self._where(path)
                if key in seen:  # the same instance twice in the folder: copy it once
                    continue
                seen.add(key)
                target = dest / (key.replace("/", "_") + ("" if key.endswith(".dcm")
                                                          else ".dcm"))
                shutil.copyfile(path, target)
                written.append(target)
        except OSError as exc:
            raise SourceError(f"could not copy study {study_uid} to {dest}: {exc}") from exc
        return written
