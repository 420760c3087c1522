"""De-identify a tree of DICOM files into another tree, on all cores.

`deidentify_tree(src, dst, key, options)` walks SRC for candidate files (the rule of the
DICOM folder source: `*.dcm`, `*.dicom`, no extension or an all-digit one; hidden files and
DICOMDIR are left out), reads each one (a Part-10 file with its "DICM" prefix is required),
applies the PS3.15 profile (`profile.Deidentifier`, with the burned-in pixel cleaner) and
writes it to

    DST/<new StudyInstanceUID>/<new SeriesInstanceUID>/<new SOPInstanceUID>.dcm

so nothing of the input's names, folders or UIDs shows in the output tree; with the same key
the paths are the same in every run. Each file ends in one of three outcomes:

- done: written;
- excluded: the pixel cleaner refused it (burned-in text, or possibly burned-in text by its
  modality or SOP class, and no known masking region); the exception's message is the
  reason, nothing is written. The cleaner sees every image, whatever its flag says;
- failed: not DICOM, truncated, unreadable, or anything else going wrong; a one-line reason.

A file is written to a hidden temporary (".<name>.partial") next to its final place and only
then given its name, so a crash or an error never leaves a partial output file behind. The
final name is taken without replacing anything (a hard link, where the file system has them):
two inputs with the same SOP Instance UID cannot overwrite each other's output silently.

Work is spread over processes (one per core by default) in batches; each process builds its
de-identifier and pixel cleaner once. `workers=1` runs in this process.
"""

from __future__ import annotations

import filecmp
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from spe.anonymize.dicom.files import walk
from spe.anonymize.dicom.options import Options
from spe.anonymize.processes import pool_context

Progress = Callable[[int, int], None]
"""Called with (files finished so far, files in all)."""

MAX_BATCH = 64  # files per task; small enough for the last batches to spread over workers
_SAFE_UID = re.compile(r"[0-9][0-9.]{0,63}")
# A UID read as bytes that decodes to a value _SAFE_UID accepts, padded as UIDs are.
_SAFE_UID_BYTES = re.compile(rb"[0-9][0-9.]{0,63}\0?")
_NAMING = {"StudyInstanceUID": 0x0020000D, "SeriesInstanceUID": 0x0020000E,
           "SOPInstanceUID": 0x00080018}
_PIXELS_MISSING = ("the pixel cleaner (spe.anonymize.dicom.pixels: PixelCleaner, "
                   "BurnedInExcluded) is not available: {error}")


class BatchError(ValueError):
    """The arguments of a batch run are unusable (SRC missing, DST inside SRC, ...)."""


@dataclass
class BatchReport:
    src: str
    dst: str
    files: int = 0  # candidate files found under SRC
    done: int = 0
    excluded: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    workers: int = 1
    seconds: float = 0.0

    @property
    def files_per_second(self) -> float:
        return round(self.files / self.seconds, 1) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "files": self.files,
            "done": self.done,
            "excluded": len(self.excluded),
            "failed": len(self.failed),
            "workers": self.workers,
            "seconds": self.seconds,
            "files_per_second": self.files_per_second,
            "excluded_files": self.excluded,
            "failed_files": self.failed,
            "warnings": self.warnings,
        }


@dataclass
class _Outcome:
    file: str  # relative to SRC, POSIX separators
    status: str  # done | excluded | failed
    reason: str = ""
    output: str = ""  # relative to DST, when done
    warnings: list[str] = field(default_factory=list)


class _FileProblem(Exception):
    """What is wrong with one input file; the message is the report's reason."""


def _check_paths(src: Path, dst: Path) -> tuple[Path, Path]:
    if not src.exists():
        raise BatchError(f"source folder {src} does not exist")
    if not src.is_dir():
        raise BatchError(f"source {src} is not a folder")
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src:
        raise BatchError("the destination folder must not be the source folder")
    if real_src in real_dst.parents:
        raise BatchError(f"the destination {dst} is inside the source folder {src}")
    if dst.exists() and not dst.is_dir():
        raise BatchError(f"destination {dst} exists and is not a folder")
    return real_src, real_dst


def check_pixel_cleaner() -> None:
    """Raise ImportError with a clear message if the pixel cleaner cannot be imported."""
    try:
        from spe.anonymize.dicom.pixels import BurnedInExcluded, PixelCleaner  # noqa: F401
    except ImportError as exc:
        raise ImportError(_PIXELS_MISSING.format(error=exc)) from exc


def deidentify_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str], key: Any,
                    options: Options | None = None, *, workers: int | None = None,
                    progress: Progress | None = None,
                    safe_private: set[tuple[str, int]] | None = None) -> BatchReport:
    """De-identify every candidate DICOM file under `src` into `dst` (see the module doc).

    `key` is the permit's `PermitKey` (or any picklable pseudonymizer). Raises `BatchError`
    for unusable folders and ImportError when the pixel cleaner is missing; a bad input
    file never raises, it is reported.
    """
    # The pixel cleaner runs on every file, so the Clean Pixel Data Option is always applied.
    options = replace(options or Options(), clean_pixel_data=True)
    src_path, dst_path = Path(src), Path(dst)
    real_src, real_dst = _check_paths(src_path, dst_path)
    check_pixel_cleaner()
    started = time.perf_counter()
    files = [p.relative_to(real_src).as_posix() for p in walk(real_src)]
    workers = max(1, workers or os.cpu_count() or 1)
    report = BatchReport(str(src_path), str(dst_path), files=len(files))
    dst_path.mkdir(parents=True, exist_ok=True)
    config = (key, options, frozenset(safe_private or ()))
    finished = 0
    if progress:
        progress(0, len(files))
    outcomes: list[_Outcome] = []
    for batch in _run(config, str(real_src), str(real_dst), files, workers, report):
        outcomes.extend(batch)
        finished += len(batch)
        if progress:
            progress(finished, len(files))
    outcomes.sort(key=lambda o: o.file)
    for outcome in outcomes:
        if outcome.status == "done":
            report.done += 1
        elif outcome.status == "excluded":
            report.excluded.append({"file": outcome.file, "reason": outcome.reason})
        else:
            report.failed.append({"file": outcome.file, "reason": outcome.reason})
        report.warnings.extend({"file": outcome.file, "warning": w} for w in outcome.warnings)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _batches(files: list[str], workers: int) -> Iterator[list[str]]:
    size = max(1, min(MAX_BATCH, -(-len(files) // (workers * 4))))
    for start in range(0, len(files), size):
        yield files[start:start + size]


def _run(config: tuple, src: str, dst: str, files: list[str], workers: int,
         report: BatchReport) -> Iterator[list[_Outcome]]:
    batches = list(_batches(files, workers))
    workers = min(workers, len(batches)) or 1
    report.workers = workers
    if workers == 1:
        worker = _Worker(*config)
        for batch in batches:
            yield worker.run(src, dst, batch)
        return
    with ProcessPoolExecutor(workers, mp_context=pool_context(),
                             initializer=_init_worker, initargs=config) as pool:
        pending: dict[Future, list[str]] = {}
        queue = iter(batches)
        lost: list[list[str]] = []  # batches that could not be handed to a broken pool

        def submit(batch: list[str]) -> None:
            try:
                pending[pool.submit(_run_batch, src, dst, batch)] = batch
            except BrokenProcessPool:
                lost.append(batch)

        for batch in queue:  # keep a few batches per worker in flight, not all of them
            submit(batch)
            if len(pending) + len(lost) >= workers * 2:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                batch = pending.pop(future)
                try:
                    yield future.result()
                except Exception as exc:  # a worker process died (killed, crashed decoder)
                    reason = f"worker process failed: {_reason(exc)}"
                    yield [_Outcome(f, "failed", reason) for f in batch]
                following = next(queue, None)
                if following is not None:
                    submit(following)
        for batch in [*lost, *queue]:
            yield [_Outcome(f, "failed", "not processed: the worker processes stopped")
                   for f in batch]


_WORKER: _Worker | None = None
_CONFIG: tuple | None = None


def _init_worker(*config: Any) -> None:
    global _CONFIG
    _CONFIG = config


def _run_batch(src: str, dst: str, files: list[str]) -> list[_Outcome]:
    """One batch in a worker process; the de-identifier is built on the first batch."""
    global _WORKER
    if _WORKER is None:
        assert _CONFIG is not None, "worker not initialised"
        _WORKER = _Worker(*_CONFIG)
    return _WORKER.run(src, dst, files)


class _Worker:
    def __init__(self, key: Any, options: Options,
                 safe_private: frozenset[tuple[str, int]]) -> None:
        from spe.anonymize.dicom.profile import Deidentifier

        try:
            from spe.anonymize.dicom.pixels import BurnedInExcluded, PixelCleaner
        except ImportError as exc:
            raise ImportError(_PIXELS_MISSING.format(error=exc)) from exc
        self.excluded_error = BurnedInExcluded
        self.cleaner = PixelCleaner()
        self.engine = Deidentifier(options, key, safe_private=set(safe_private),
                                   pixel_cleaner=self.cleaner)
        self._folders: set[Path] = set()

    def run(self, src: str, dst: str, files: list[str]) -> list[_Outcome]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # malformed values must not flood the output
            return [self.one(Path(src), Path(dst), name) for name in files]

    def one(self, src: Path, dst: Path, name: str) -> _Outcome:
        try:
            output, notes = self._deidentify(src / name, dst)
        except self.excluded_error as exc:
            return _Outcome(name, "excluded", _first_line(exc) or "burned-in annotation")
        except Exception as exc:  # a third-party parser on untrusted files
            return _Outcome(name, "failed", _reason(exc))
        return _Outcome(name, "done", output=output, warnings=notes)

    def one_object(self, data: Any, dst: Path, name: str) -> _Outcome:
        """`one` for an object held in memory: Part-10 bytes (read as a file would be) or a
        pydicom Dataset already read from them."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                output, notes = self._deidentify(data, dst)
        except self.excluded_error as exc:
            return _Outcome(name, "excluded", _first_line(exc) or "burned-in annotation")
        except Exception as exc:  # a third-party parser on untrusted input
            return _Outcome(name, "failed", _reason(exc))
        return _Outcome(name, "done", output=output, warnings=notes)

    def _prepared(self, source: Any) -> tuple[Any, list[str], list[str]]:
        """A file (path, Part-10 bytes or a Dataset read from them) read, checked and
        de-identified in memory: the dataset, its output name's three UID parts and the
        notes. Raises what a file's problems raise; the callers turn that into its line."""
        import io

        import pydicom

        if isinstance(source, pydicom.Dataset):
            ds = source
        else:
            if not isinstance(source, bytes):
                # parsing from memory is faster than through a buffered file
                with open(source, "rb") as file:
                    source = file.read()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(io.BytesIO(source), force=False)
            for warning in caught:
                text = str(warning.message)
                if "EOF" in text or "end of file" in text.lower():
                    raise _FileProblem(f"truncated: {_first_line(text)}")
        _check_complete(ds)
        result = self.engine.apply(ds)  # the pixel cleaner runs inside, on every object
        _written_here(ds)
        parts = [_uid_part(ds, k) for k in
                 ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
        return ds, parts, list(result.warnings)

    def _deidentify(self, source: Any, dst: Path) -> tuple[str, list[str]]:
        ds, parts, notes = self._prepared(source)
        folder = dst.joinpath(*parts[:2])
        if folder not in self._folders:  # a series' files share their folder
            folder.mkdir(parents=True, exist_ok=True)
            if len(self._folders) >= 4096:
                self._folders.clear()
            self._folders.add(folder)
        final = folder / f"{parts[2]}.dcm"
        try:
            written = _write(ds, final)
        except FileNotFoundError:  # its folder was removed since: make it again
            folder.mkdir(parents=True, exist_ok=True)
            written = _write(ds, final)
        if not written:
            notes.append("the same output was already in DST (identical file kept)")
        return final.relative_to(dst).as_posix(), notes

    def in_memory(self, path: Path) -> tuple[Any, str, list[str]]:
        """`_deidentify` of a file without the write: the de-identified dataset, its output
        path relative to DST and the notes, for a caller that changes the dataset further
        before writing it once with `write_new` (the node's staging applies layer 3 so).
        Raises what `_deidentify` raises; `outcome_of` turns that into a report line."""
        ds, parts, notes = self._prepared(path)
        return ds, f"{parts[0]}/{parts[1]}/{parts[2]}.dcm", notes

    def outcome_of(self, name: str, exc: BaseException) -> tuple[str, str]:
        """(status, reason) of a file whose `in_memory` or `write_new` raised `exc`, as
        `one` reports it."""
        if isinstance(exc, self.excluded_error):
            return "excluded", _first_line(exc) or "burned-in annotation"
        return "failed", _reason(exc)


def write_new(ds: Any, final: Path) -> bool:
    """Write `ds` to `final` as `deidentify_tree` writes its outputs (a hidden temporary,
    then the name, never replacing another file); False if an identical file was there."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return _write(ds, final)


def commit_new(tmp: Path, final: Path) -> bool:
    """The second half of `_write` for a temporary written earlier (by another process):
    give it its final name as `_write` does, and remove it. False if an identical file was
    there; FileExistsError (with `_write`'s reason) if another one was."""
    try:
        try:
            os.link(tmp, final)
        except FileExistsError:
            if not filecmp.cmp(tmp, final, shallow=False):
                raise FileExistsError(
                    "an output file of the same name exists with other content (another "
                    "input with the same SOPInstanceUID, or an earlier run into DST)") from None
            return False
        except OSError:  # no hard links on this file system
            os.replace(tmp, final)
        return True
    finally:
        tmp.unlink(missing_ok=True)


class InstanceDeidentifier:
    """The batch's treatment of one object at a time, for objects that arrive over the
    network (a C-STORE sub-operation, a WADO-RS part) and are never written to disk as they
    came: the same profile, pixel cleaner and output naming as `deidentify_tree`, so a
    study de-identified this way gives the files a folder of the same objects gives.

    `apply(data, dst, name)` returns the outcome as `(status, reason, output)`, status one
    of done | excluded | failed (see the module doc); a bad object never raises.
    """

    def __init__(self, key: Any, options: Options | None = None, *,
                 safe_private: set[tuple[str, int]] | None = None) -> None:
        options = replace(options or Options(), clean_pixel_data=True)
        self._worker = _Worker(key, options, frozenset(safe_private or ()))

    def apply(self, data: Any, dst: Path, name: str) -> tuple[str, str, str]:
        Path(dst).mkdir(parents=True, exist_ok=True)
        outcome = self._worker.one_object(data, Path(dst), name)
        return outcome.status, outcome.reason, outcome.output


def _written_here(ds: Any) -> None:
    """The output names this implementation as the one that wrote it (PS3.10 7.1), not the
    input's: the same object gives the same file whether it came from a file (whose meta
    names the modality's software) or over DICOM networking (which carries no file meta)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        elements = meta._dict
        for raw in _implementation():  # immutable: shared between datasets
            elements[raw.tag] = raw


@cache
def _implementation() -> tuple[Any, ...]:
    """Implementation Class UID and Version Name as pydicom encodes them in the file meta
    (explicit VR little endian), encoded once rather than validated and set per file."""
    from pydicom import __version__
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.filewriter import write_dataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {__version__}"[:16]
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    write_dataset(buffer, meta)
    buffer.seek(0)
    return tuple(read_dataset(buffer, False, True)._dict.values())


def _check_complete(ds: Any) -> None:
    """pydicom reads a cut-off file without complaint; a value shorter than its length says
    the file was cut inside it, and a file without any attribute is no DICOM object."""
    from pydicom.dataelem import RawDataElement

    elements = list(ds._dict.values())
    if not elements:
        raise _FileProblem("truncated or empty: no attributes after the file meta information")
    for elem in elements:
        if (isinstance(elem, RawDataElement) and elem.value is not None
                and elem.length != 0xFFFFFFFF and len(elem.value) < elem.length):
            raise _FileProblem(f"truncated: the file ends inside ({elem.tag.group:04X},"
                             f"{elem.tag.element:04X})")


def _uid_part(ds: Any, keyword: str) -> str:
    raw = ds._dict.get(_NAMING[keyword])
    value = getattr(raw, "value", None)
    if getattr(raw, "is_raw", False) and isinstance(value, bytes) \
            and _SAFE_UID_BYTES.fullmatch(value):
        text = value.rstrip(b"\0")
        if len(value) == len(text) + len(text) % 2:
            # what decoding it gives, and left undecoded: writing it gives the same bytes
            return text.decode("ascii")
    elem = ds.get(keyword)
    value = str(elem).strip().rstrip("\0") if elem is not None else ""
    if not value:
        raise _FileProblem(f"no {keyword}: the output cannot be named")
    if not _SAFE_UID.fullmatch(value):
        raise _FileProblem(f"{keyword} is not a valid UID: the output cannot be named")
    return value


def _write(ds: Any, final: Path) -> bool:
    """Write to a hidden temporary next to `final`, then give it its name; never leave the
    temporary behind. False if an identical file was there already."""
    from spe.anonymize.dicom.writer import part10_bytes

    tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        data = part10_bytes(ds)
        with open(tmp, "wb") as out:
            out.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return commit_new(tmp, final)


def _first_line(value: Any) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:200] if text else ""


def _reason(exc: BaseException) -> str:
    from pydicom.errors import InvalidDicomError

    if isinstance(exc, InvalidDicomError):
        return "not a DICOM Part-10 file (no 'DICM' prefix after the preamble)"
    if isinstance(exc, _FileProblem):
        return _first_line(exc)
    if isinstance(exc, FileExistsError):
        return _first_line(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"unreadable or unwritable: {exc.strerror}"
    if isinstance(exc, EOFError):
        return f"truncated: {_first_line(exc) or 'unexpected end of file'}"
    message = _first_line(exc)
    return f"{type(exc).__name__}: {message}"[:200] if message else type(exc).__name__
