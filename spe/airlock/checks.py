"""The airlock's automatic checks of what a job wrote to its output directory.

    report = check_outputs(Path("out"), rules=OutputRules(), extract_terms=terms)
    report.verdict            # "pass" | "review" | "blocked"
    report.files[0].reasons   # why

Nothing is followed: the walk opens every directory with O_NOFOLLOW and lists it by file
descriptor (`os.scandir(fd)`), and opens every file relative to its directory's descriptor
with O_NOFOLLOW | O_NONBLOCK, then checks that what it opened is the regular file it listed
(so a file swapped for a link or a FIFO between the listing and the read is caught, and a
FIFO never blocks the check). Symbolic links, FIFOs, sockets, devices and directories nested
too deep are blocked; a file with other hard links goes to review.

Each file's kind comes from its bytes (`sniff`), never from its name: DICOM (however named),
FHIR NDJSON or JSON resources, Parquet/Feather/pickle/NumPy/SQLite/HDF5/NIfTI, archives and
unknown binaries are blocked as record-level or opaque. Then, by type: tables get
statistical disclosure control (`tables.py`), text and JSON a scan for the extract's ids and
dates (`scan.py`), figures (PNG, SVG, PDF) go to review with their text scanned where that
is cheap. Last, ACRO's verdicts (`acro.py`) are applied to the files it checked.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spe.airlock.acro import AcroOutput, acro_outputs, is_acro_results
from spe.airlock.report import AirlockReport, FileVerdict
from spe.airlock.rules import OutputRules
from spe.airlock.scan import scan_text, summarise, value_category
from spe.airlock.sniff import HEAD_BYTES, sniff
from spe.airlock.tables import check_table, markdown_tables
from spe.airlock.terms import ExtractTerms

TEXT_TYPES = {"csv", "tsv", "txt", "md", "json", "svg", "html", "htm", "xml", "ndjson",
              "jsonl", "log", "tex", "rst", "yaml", "yml"}
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_ACTIVE_SVG = re.compile(r"<script\b|<foreignObject\b|\son[a-z]+\s*=|javascript:", re.I)
_EXTERNAL_REF = re.compile(r"""(?:href|src)\s*=\s*["'](?:https?:|//|file:)""", re.I)
NDJSON_SAMPLE_LINES = 20
JSON_MAX_DEPTH = 64


def check_outputs(output_dir: Path, *, rules: OutputRules,
                  extract_terms: ExtractTerms | None = None) -> AirlockReport:
    """Check every entry under `output_dir`; never raises for what the job wrote."""
    report = AirlockReport(rules=rules.public())
    try:
        top = os.lstat(output_dir)
    except OSError as exc:
        report.block(f"the output directory cannot be read: {exc.strerror}")
        return report.finish()
    if not stat.S_ISDIR(top.st_mode):
        report.block("the output directory is not a directory (a link or a file)")
        return report.finish()
    try:
        fd = os.open(output_dir, _DIR_FLAGS)
    except OSError as exc:
        report.block(f"the output directory cannot be opened: {exc.strerror}")
        return report.finish()
    walk = _Walk(report, rules, extract_terms)
    try:
        walk.directory(fd, "", 0)
    finally:
        os.close(fd)
    walk.apply_acro()
    walk.apply_magnitudes()
    if report.total_bytes > rules.max_total_bytes:
        report.block(f"the outputs total {report.total_bytes} bytes, over the limit of "
                     f"{rules.max_total_bytes}")
    return report.finish()


@dataclass
class _Acro:
    folder: str  # where results.json is, relative to the output directory ("" or "a/")
    results_path: str
    outputs: list[AcroOutput]


@dataclass
class _Walk:
    report: AirlockReport
    rules: OutputRules
    terms: ExtractTerms | None
    entries: int = 0
    hashes: dict[str, str] = field(default_factory=dict)
    small_texts: dict[str, str] = field(default_factory=dict)
    acro: list[_Acro] = field(default_factory=list)
    magnitudes: dict[str, str] = field(default_factory=dict)  # path -> pending review reason
    stopped: bool = False

    # the walk ------------------------------------------------------------------------------
    def directory(self, dir_fd: int, prefix: str, depth: int) -> None:
        try:
            with os.scandir(dir_fd) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            self.add(FileVerdict(path=prefix.rstrip("/") or ".", size=0, kind="directory"),
                     "blocked", f"cannot be listed: {exc.strerror}")
            return
        for entry in entries:
            if self.stopped:
                return
            self.entries += 1
            if self.entries > self.rules.max_files:
                self.report.block(f"more than {self.rules.max_files} entries in the output "
                                  "directory; the rest were not checked")
                self.stopped = True
                return
            self.entry(dir_fd, entry.name, prefix + entry.name, depth)

    def entry(self, dir_fd: int, name: str, path: str, depth: int) -> None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            self.add(FileVerdict(path=path, size=0, kind="unreadable"), "blocked",
                     f"cannot be read: {exc.strerror}")
            return
        mode = st.st_mode
        special = {stat.S_IFLNK: ("symlink", "a symbolic link: links are never followed nor "
                                             "released"),
                   stat.S_IFIFO: ("fifo", "a FIFO (named pipe): only regular files leave"),
                   stat.S_IFSOCK: ("socket", "a socket: only regular files leave"),
                   stat.S_IFCHR: ("device", "a character device: only regular files leave"),
                   stat.S_IFBLK: ("device", "a block device: only regular files leave")}
        kind = stat.S_IFMT(mode)
        if kind in special:
            label, reason = special[kind]
            self.add(FileVerdict(path=path, size=st.st_size if label != "device" else 0,
                                 kind=label), "blocked", reason)
            return
        if stat.S_ISDIR(mode):
            self.subdirectory(dir_fd, name, path, depth)
            return
        if not stat.S_ISREG(mode):
            self.add(FileVerdict(path=path, size=0, kind="special"), "blocked",
                     "a special file of an unknown type: only regular files leave")
            return
        self.regular(dir_fd, name, path, st)

    def subdirectory(self, dir_fd: int, name: str, path: str, depth: int) -> None:
        verdict = FileVerdict(path=path + "/", size=0, kind="directory")
        self.check_name(verdict, name)
        if depth + 1 > self.rules.max_depth:
            verdict.flag("blocked", f"nested deeper than {self.rules.max_depth} directories; "
                                    "its content was not checked")
        if verdict.reasons:
            self.report.files.append(verdict)
        if verdict.verdict == "blocked" and depth + 1 > self.rules.max_depth:
            return
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self.add(verdict, "blocked", f"cannot be opened: {exc.strerror}")
            return
        try:
            self.directory(fd, path + "/", depth + 1)
        finally:
            os.close(fd)

    def add(self, verdict: FileVerdict, level: str, reason: str) -> None:
        verdict.flag(level, reason)  # type: ignore[arg-type]
        if verdict not in self.report.files:
            self.report.files.append(verdict)

    def check_name(self, verdict: FileVerdict, name: str) -> None:
        if not name.isprintable() or any("\udc80" <= c <= "\udcff" for c in name):
            verdict.flag("blocked", "the name has control characters or is not UTF-8")
        if self.terms is not None and (category := value_category(name, self.terms)):
            verdict.flag("blocked", f"the name holds a {category} from the extract")
        if name.startswith("."):
            verdict.flag("review", "a hidden file or directory")

    # a regular file ------------------------------------------------------------------------
    def regular(self, dir_fd: int, name: str, path: str, st: os.stat_result) -> None:
        verdict = FileVerdict(path=path, size=st.st_size, kind="unknown")
        self.report.files.append(verdict)
        self.report.total_bytes += st.st_size
        self.check_name(verdict, name)
        if st.st_nlink > 1:
            verdict.flag("review", f"a hard link ({st.st_nlink} names): the same file may be "
                                   "elsewhere, e.g. in the extract")
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            verdict.kind = "unreadable"
            verdict.flag("blocked", f"cannot be opened: {exc.strerror}")
            return
        try:
            opened = os.fstat(fd)
            if (not stat.S_ISREG(opened.st_mode) or opened.st_ino != st.st_ino
                    or opened.st_dev != st.st_dev):
                verdict.kind = "unreadable"
                verdict.flag("blocked", "changed while it was being checked")
                return
            head = os.pread(fd, HEAD_BYTES, 0)
            kind, description = sniff(head)
            verdict.kind = kind
            if opened.st_size > self.rules.max_file_bytes:
                verdict.flag("blocked", f"{opened.st_size} bytes, over the limit of "
                                        f"{self.rules.max_file_bytes} for one file")
                if kind not in {"dicom", "opaque", "archive", "binary"}:
                    return
            data = head if opened.st_size > self.rules.max_file_bytes else _read_all(fd)
        except OSError as exc:
            verdict.kind = "unreadable"
            verdict.flag("blocked", f"cannot be read: {exc.strerror}")
            return
        finally:
            os.close(fd)
        self.hashes[path] = hashlib.sha256(data).hexdigest()
        try:
            self.content(verdict, name, path, data, kind, description)
        except Exception as exc:  # a file the checks cannot read does not leave
            self.magnitudes.pop(path, None)
            verdict.flag("blocked", f"could not be checked ({type(exc).__name__})")

    def content(self, verdict: FileVerdict, name: str, path: str, data: bytes, kind: str,
                description: str) -> None:
        ext = name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""
        if kind in {"dicom", "opaque", "archive"}:
            verdict.flag("blocked", f"record-level or opaque: {description}")
            return
        if kind == "binary":
            verdict.flag("blocked", f"{description}: not a type a person can check")
            return
        if ext not in self.rules.allowed_extensions:
            allowed = ", ".join(sorted(self.rules.allowed_extensions))
            verdict.flag("blocked", f"type .{ext or '(none)'} is not allowed (allowed: "
                                    f"{allowed})")
        if kind == "empty":
            return
        expected = {"png": "png", "pdf": "pdf"}.get(ext, "text" if ext in TEXT_TYPES else None)
        if expected is not None and kind != expected:
            verdict.flag("blocked", f"the content is a {description}, not what .{ext} says")
            if kind != "text":
                return
        if kind == "png":
            self.png(verdict, data)
        elif kind == "pdf":
            self.pdf(verdict, data)
        elif kind == "image":
            verdict.flag("review", f"a {description}: a person looks at images")
        elif kind == "text":
            self.text(verdict, path, ext, data)

    # by type -------------------------------------------------------------------------------
    def text(self, verdict: FileVerdict, path: str, ext: str, data: bytes) -> None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            verdict.kind = "binary"
            verdict.flag("blocked", "not UTF-8 text")
            return
        if "\x00" in text:
            verdict.kind = "binary"
            verdict.flag("blocked", "binary content (NUL bytes) in a text file")
            return
        if fhir_lines := _fhir_ndjson_lines(text):
            verdict.kind = "ndjson"
            verdict.flag("blocked", f"record-level or opaque: FHIR NDJSON ({fhir_lines} of the "
                                    "first lines are resources)")
            return
        if len(data) <= 256 and "checksums/" in path:
            self.small_texts[path] = text
        scan_whole = True
        if ext in {"csv", "tsv"}:
            verdict.kind = "table"
            self.table(verdict, path, text, "\t" if ext == "tsv" else ",")
            scan_whole = False  # every cell was looked up
        elif ext == "json":
            self.json(verdict, path, text)
            if verdict.kind == "fhir-json":
                return
        elif ext == "md":
            verdict.kind = "markdown"
            for rows, lines in markdown_tables(text):
                self.apply_table(verdict, path, check_table(
                    rows, self.rules, self.terms, row_numbers=lines, unit="line"))
        elif ext == "svg":
            verdict.kind = "svg"
            if _ACTIVE_SVG.search(text):
                verdict.flag("blocked", "an SVG with active content (script, event handler, "
                                        "foreignObject)")
            if _EXTERNAL_REF.search(text):
                verdict.flag("review", "an SVG that references outside content")
            verdict.flag("review", "a figure: a person looks at it")
        else:
            verdict.kind = "text"
        if scan_whole:
            self.scan(verdict, text)

    def scan(self, verdict: FileVerdict, text: str, where: str = "line") -> None:
        if self.terms is None or not len(self.terms):
            return
        for reason in summarise(scan_text(text, self.terms), where):
            verdict.flag("blocked", reason)

    def table(self, verdict: FileVerdict, path: str, text: str, delimiter: str) -> None:
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                                   strict=True))
        except csv.Error as exc:
            verdict.flag("blocked", f"not a readable table: {exc}")
            return
        self.apply_table(verdict, path, check_table(rows, self.rules, self.terms))

    def apply_table(self, verdict: FileVerdict, path: str, result: Any) -> None:
        for level, reason in result.flags:
            verdict.flag(level, reason)
        if result.count_cells:
            verdict.notes.append(f"{result.count_cells} count cells checked against the "
                                 f"threshold of {self.rules.min_count}")
        if result.magnitude_columns:
            names = ", ".join(f'"{n}"' for n in result.magnitude_columns[:5])
            r = self.rules
            self.magnitudes[path] = (
                f"columns of magnitudes, not counts ({names}): dominance (N={r.dominance_n}, "
                f"k={r.dominance_k}) and the p-ratio ({r.p_ratio}) need each cell's "
                "contributions, which the table does not show")

    def json(self, verdict: FileVerdict, path: str, text: str) -> None:
        verdict.kind = "json"
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            verdict.flag("review", "not valid JSON")
            return
        if _has_resource_type(data):
            verdict.kind = "fhir-json"
            verdict.flag("blocked", "record-level or opaque: FHIR resources (resourceType)")
            return
        if is_acro_results(data):
            verdict.kind = "acro-metadata"
            folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
            self.acro.append(_Acro(folder, path, acro_outputs(data)))
            verdict.flag("review", "ACRO's results file: for the output checker (its session "
                                   "summary is marked DO_NOT_RELEASE)")
            return
        if (isinstance(data, list) and len(data) >= 2
                and all(isinstance(r, dict) for r in data)):
            keys = list(dict.fromkeys(k for r in data for k in r))
            flat = all(not isinstance(v, dict | list) for r in data for v in r.values())
            if flat:  # records, as pandas' to_json(orient="records") writes them
                rows = [keys] + [["" if r.get(k) is None else str(r.get(k)) for k in keys]
                                 for r in data]
                self.apply_table(verdict, path, check_table(
                    rows, self.rules, self.terms, row_numbers=range(len(rows)), unit="record"))

    def png(self, verdict: FileVerdict, data: bytes) -> None:
        verdict.kind = "image"
        verdict.flag("review", "an image: a person looks at it")
        self.scan(verdict, _png_text(data), where="text chunk")

    def pdf(self, verdict: FileVerdict, data: bytes) -> None:
        verdict.flag("review", "a PDF: a person looks at it (only its uncompressed text was "
                               "scanned)")
        self.scan(verdict, data.decode("latin-1"))

    # after the walk ------------------------------------------------------------------------
    def apply_acro(self) -> None:
        by_path = {f.path: f for f in self.report.files}
        for acro in self.acro:
            results = by_path[acro.results_path]
            missing = []
            for output in acro.outputs:
                for name in output.files:
                    path = acro.folder + name
                    verdict = by_path.get(path)
                    if verdict is None:
                        missing.append(name)
                        continue
                    if not self._acro_checksum_ok(acro, name, path, verdict):
                        continue
                    if output.status == "fail":
                        verdict.flag("blocked", output.reason())
                    elif output.status == "review":
                        verdict.flag("review", output.reason())
                    elif output.status == "pass":
                        verdict.notes.append(output.reason())
                        self.magnitudes.pop(path, None)  # ACRO saw the contributions
                    else:
                        verdict.flag("review", f"ACRO {output.uid}: unknown status "
                                               f"{output.status[:20]!r}")
                    if output.for_checker_only:
                        verdict.flag("blocked", "ACRO marks it DO NOT RELEASE: a summary for "
                                                "the output checker only (read results.json)")
            if missing:
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                results.flag("review", f"ACRO lists files that are not in the output: {shown}")

    def _acro_checksum_ok(self, acro: _Acro, name: str, path: str,
                          verdict: FileVerdict) -> bool:
        recorded = self.small_texts.get(f"{acro.folder}checksums/{name}.txt")
        actual = self.hashes.get(path)
        if recorded is None or actual is None or recorded.strip().lower() == actual:
            return True
        verdict.flag("review", "differs from the checksum ACRO recorded: changed after ACRO "
                               "checked it, so ACRO's verdict does not apply")
        return False

    def apply_magnitudes(self) -> None:
        by_path = {f.path: f for f in self.report.files}
        for path, reason in self.magnitudes.items():
            by_path[path].flag("review", reason)


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _fhir_ndjson_lines(text: str) -> int:
    """How many of the first non-empty lines are JSON objects with a resourceType."""
    found = seen = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        seen += 1
        if seen > NDJSON_SAMPLE_LINES:
            break
        if line.startswith("{") and '"resourceType"' in line:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "resourceType" in obj:
                found += 1
    return found


def _has_resource_type(node: Any, depth: int = 0) -> bool:
    if depth > JSON_MAX_DEPTH:
        return False
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str):
            return True
        return any(_has_resource_type(v, depth + 1) for v in node.values())
    if isinstance(node, list):
        return any(_has_resource_type(v, depth + 1) for v in node)
    return False


def _png_text(data: bytes) -> str:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG, where metadata hides."""
    out = []
    offset = 8
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        ctype = data[offset + 4:offset + 8]
        body = data[offset + 8:offset + 8 + length]
        if ctype in (b"tEXt", b"iTXt"):
            out.append(body.replace(b"\x00", b" ").decode("latin-1"))
        elif ctype == b"zTXt":
            keyword, _, rest = body.partition(b"\x00")
            try:
                text = zlib.decompressobj().decompress(rest[1:], 1 << 20)
            except zlib.error:
                text = b""
            out.append(keyword.decode("latin-1") + " " + text.decode("latin-1"))
        elif ctype == b"IEND":
            break
        offset += 12 + length
    return "\n".join(out)
