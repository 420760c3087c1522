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
unknown binaries are blocked as record-level or opaque. Then, one module per kind of check:

- every text: the extract's terms in any form, its dates as dates or day numbers, numbers
  of 10 or more digits (`scan.py`, `encodings.py`, `dayoffsets.py`); counts written in
  prose, and records written as lines of one pattern (`prose.py`);
- tables (CSV, TSV, Markdown, text tables): statistical disclosure control (`tables.py`);
- JSON: FHIR without resourceType, records anywhere, counts wherever a number is
  (`jsondoc.py`);
- figures (PNG, SVG, PDF) go to review with their text scanned where that is cheap;
- after the walk: many files of one shape checked as one output (`shapes.py`), and what a
  job-written ACRO `results.json` says, which may only make a verdict stricter (`acro.py`).

Reasons name the rule and the place (line or row, column by number), never the value.
"""

from __future__ import annotations

import csv
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
from spe.airlock.jsondoc import check_json
from spe.airlock.prose import prose_counts, stated_dof, text_tables
from spe.airlock.report import AirlockReport, FileVerdict, Place, where
from spe.airlock.rules import OutputRules
from spe.airlock.scan import long_numbers, scan_text, summarise, value_category
from spe.airlock.shapes import MAX_BYTES, Piece, joined, same_shape
from spe.airlock.sniff import HEAD_BYTES, sniff
from spe.airlock.tables import TableResult, check_table, markdown_tables
from spe.airlock.terms import ExtractTerms

TEXT_TYPES = {"csv", "tsv", "txt", "md", "json", "svg", "html", "htm", "xml", "ndjson",
              "jsonl", "log", "tex", "rst", "yaml", "yml"}
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_ACTIVE_SVG = re.compile(r"<script\b|<foreignObject\b|\son[a-z]+\s*=|javascript:", re.I)
_EXTERNAL_REF = re.compile(r"""(?:href|src)\s*=\s*["'](?:https?:|//|file:)""", re.I)
TOGETHER = "(files of one shape, together)"
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
    walk.apply_shapes()
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
    pieces: list[Piece] = field(default_factory=list)  # small texts, for shapes.py
    acro: list[_Acro] = field(default_factory=list)
    # path -> the review reason (and places) of magnitudes, given after ACRO was read
    magnitudes: dict[str, tuple[str, list[Place]]] = field(default_factory=dict)
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
            # the extension is the job's text: named only when it is one of the known ones
            shown = f"type .{ext}" if ext in TEXT_TYPES | {"png", "pdf"} else "this type"
            verdict.flag("blocked", f"{shown} is not allowed (allowed: {allowed})")
        if kind == "empty":
            return
        expected = {"png": "png", "pdf": "pdf"}.get(ext, "text" if ext in TEXT_TYPES else None)
        if expected is not None and kind != expected:
            verdict.flag("blocked", f"the content is a {description}, not what its name "
                                    "says")
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
        if path != TOGETHER and len(data) <= MAX_BYTES and ext in {"csv", "tsv", "json",
                                                                   "txt", "md"}:
            self.pieces.append(Piece(path, ext, text))
        self.scan(verdict, text)
        for level, reason, places in prose_counts(text, self.rules):
            verdict.flag(level, reason, places)
        if ext in {"csv", "tsv"}:
            verdict.kind = "table"
            self.table(verdict, path, text, "\t" if ext == "tsv" else ",")
        elif ext == "json":
            self.json(verdict, path, text)
        elif ext in {"md", "txt"}:
            verdict.kind = "markdown" if ext == "md" else "text"
            for rows, lines in markdown_tables(text):
                self.apply_table(verdict, path, check_table(
                    rows, self.rules, self.terms, row_numbers=lines, unit="line"))
            self.prose_tables(verdict, path, text)
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

    def scan(self, verdict: FileVerdict, text: str, unit: str = "line",
             numbers: bool = True) -> None:
        if self.terms is not None and len(self.terms):
            for level, reason, places in summarise(scan_text(text, self.terms), unit):
                verdict.flag(level, reason, places)
        if numbers and (longs := long_numbers(text)):
            verdict.flag("review", f"{len(longs)} number{'s' if len(longs) > 1 else ''} of 10 "
                                   "or more digits: identifiers (or encoded values), not "
                                   f"quantities: {where(longs, unit)}", longs)

    def prose_tables(self, verdict: FileVerdict, path: str, text: str) -> None:
        """Lines of one pattern: records in prose (review), or a table in text."""
        for kind, rows in text_tables(text):
            if kind == "records":
                places = [Place(rule="record-lines", line=n) for n, _ in rows]
                verdict.flag("review", f"{len(rows)} lines written to one pattern with "
                                       "different words (records written as prose?): "
                                       f"{where(places)}", places)
                continue
            result = check_table([r for _, r in rows], self.rules, self.terms,
                                 row_numbers=[n for n, _ in rows], unit="line")
            dof = stated_dof(text)
            if result.magnitude_columns and dof:  # a model summary's coefficients
                result.magnitude_columns = []
                if min(dof) < self.rules.min_count:
                    place = Place(rule="model-dof", line=rows[0][0])
                    result.add("blocked", "a model summary stating observations or residual "
                                          "degrees of freedom under the threshold of "
                                          f"{self.rules.min_count}", [place])
            self.apply_table(verdict, path, result)

    def table(self, verdict: FileVerdict, path: str, text: str, delimiter: str) -> None:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        rows: list[list[str]] = []
        lines: list[int] = []
        try:
            start = 1
            for row in reader:
                rows.append(row)
                lines.append(start)
                start = reader.line_num + 1
        except csv.Error:
            place = Place(rule="unreadable-table", line=reader.line_num)
            verdict.flag("blocked", f"not a readable table: {where([place])}", [place])
            return
        self.apply_table(verdict, path, check_table(rows, self.rules, self.terms,
                                                    row_numbers=lines))

    def apply_table(self, verdict: FileVerdict, path: str, result: TableResult) -> None:
        for level, reason, places in result.flags:
            verdict.flag(level, reason, places)
        if result.count_cells:
            verdict.notes.append(f"{result.count_cells} count cells checked against the "
                                 f"threshold of {self.rules.min_count}")
        if result.magnitude_columns:
            places = [Place(rule="magnitude", column=c) for c in result.magnitude_columns]
            self.magnitude(path, places, f"columns of magnitudes, not counts (columns "
                                         f"{', '.join(map(str, result.magnitude_columns[:5]))})")

    def magnitude(self, path: str, places: list[Place], what: str) -> None:
        r = self.rules
        self.magnitudes[path] = (
            f"{what}: dominance (N={r.dominance_n}, k={r.dominance_k}) and the p-ratio "
            f"({r.p_ratio}) need each cell's contributions, which the file does not show",
            places)

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
        result = check_json(data, text, self.rules, self.terms)
        for level, reason, places in result.flags:
            verdict.flag(level, reason, places)
        for table in result.tables:
            self.apply_table(verdict, path, table)
        if result.magnitudes:
            self.magnitude(path, result.magnitudes, f"{len(result.magnitudes)} means, sums, "
                                                    "minima or maxima")

    def png(self, verdict: FileVerdict, data: bytes) -> None:
        verdict.kind = "image"
        verdict.flag("review", "an image: a person looks at it")
        self.scan(verdict, _png_text(data), unit="text chunk")

    def pdf(self, verdict: FileVerdict, data: bytes) -> None:
        verdict.flag("review", "a PDF: a person looks at it (only its uncompressed text was "
                               "scanned)")
        # a PDF's cross-reference table is made of 10-digit offsets: not the job's numbers
        self.scan(verdict, data.decode("latin-1"), numbers=False)

    # after the walk ------------------------------------------------------------------------
    def apply_shapes(self) -> None:
        """Many files: each to review; files of one shape checked again as one output."""
        by_path = {f.path: f for f in self.report.files}
        files = [f for f in self.report.files if not f.path.endswith("/")]
        if len(files) > self.rules.review_files:
            for entry in files:
                entry.flag("review", f"one of {len(files)} files (more than "
                                     f"{self.rules.review_files}): many outputs are "
                                     "reviewed as one request", [Place(rule="many-files")])
        for group in same_shape(self.pieces, self.rules.same_shape_files):
            together = FileVerdict(path=TOGETHER, size=0, kind="group")
            try:
                ext, content = joined(group)
                self.content(together, f"together.{ext}", TOGETHER, content.encode(), "text",
                             "text")
            except Exception as exc:  # what cannot be checked together does not leave
                together.flag("blocked", f"could not be checked together "
                                         f"({type(exc).__name__})")
            if together.path in self.magnitudes:
                together.flag("review", self.magnitudes.pop(together.path)[0])
            for piece in group:
                entry = by_path[piece.path]
                entry.flag("review", f"one of {len(group)} files of the same shape: checked "
                                     "together as one output", [Place(rule="same-shape-files")])
                for reason in together.reasons:
                    entry.flag(together.verdict, f"with the other {len(group) - 1} files of "
                                                 f"its shape: {reason}",
                               [Place(rule="same-shape-files")])

    def apply_acro(self) -> None:
        """ACRO's results.json was written by the job: it may only make verdicts stricter."""
        by_path = {f.path: f for f in self.report.files}
        for acro in self.acro:
            results = by_path[acro.results_path]
            missing = 0
            for output in acro.outputs:
                for name in output.files:
                    verdict = by_path.get(acro.folder + name)
                    if verdict is None:
                        missing += 1
                        continue
                    if output.status == "fail":
                        verdict.flag("blocked", output.reason())
                    elif output.status == "pass":
                        verdict.notes.append(output.reason() + ": not evidence, the "
                                             "airlock's own checks decide")
                    else:
                        verdict.flag("review", output.reason())
                    if output.for_checker_only:
                        verdict.flag("blocked", "ACRO marks it DO NOT RELEASE: a summary for "
                                                "the output checker only (read results.json)")
            if missing:
                results.flag("review", f"ACRO's results.json lists {missing} file"
                                       f"{'s' if missing > 1 else ''} that are not in the "
                                       "output")

    def apply_magnitudes(self) -> None:
        by_path = {f.path: f for f in self.report.files}
        for path, (reason, places) in self.magnitudes.items():
            by_path[path].flag("review", reason, places)


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
