"""FHIR Bulk Data files (NDJSON, one resource per line) as a `FhirSource`.

The format is that of the FHIR Bulk Data Access export (`$export`): newline-delimited JSON,
one resource per line, typically one file per resource type. Each line is parsed and
validated on its own (see `fhir_validate`), so one bad line is reported and skipped while
the rest of the file is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from gateway.node.sources.base import FhirItem, Progress, Skipped, SourceError
from gateway.node.sources.fhir_validate import InvalidResource, validate


def fhir_files(folder: Path, pattern: str) -> list[Path]:
    """The files matching `pattern` under `folder` (any depth), sorted by relative path."""
    if not folder.is_dir():
        raise SourceError(f"FHIR folder {folder} does not exist or is not a folder")
    return sorted((p for p in folder.rglob(pattern)
                   if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: p.relative_to(folder).as_posix())


def parse_error(exc: ValueError) -> str:
    """A short reason for a line or file that is not JSON."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"bad JSON: {exc.msg} at column {exc.colno}"
    return f"bad JSON: {exc}"[:200]


class FhirNdjsonSource:
    """Resources from the `*.ndjson` files of a folder, validated as FHIR R4."""

    def __init__(self, folder: Path | str, name: str = "ndjson") -> None:
        self.folder = Path(folder)
        self.name = name

    def __repr__(self) -> str:
        return f"FhirNdjsonSource({str(self.folder)!r}, name={self.name!r})"

    progress_unit = "resources"

    def count(self) -> int:
        """The non-blank lines `resources()` will read (for its progress)."""
        total = 0
        for path in fhir_files(self.folder, "*.ndjson"):
            try:
                with path.open("rb") as handle:
                    total += sum(1 for line in handle if line.strip())
            except OSError:
                continue  # resources() reports it as skipped
        return total

    def resources(self, progress: Progress | None = None) -> Iterator[FhirItem | Skipped]:
        """Every line of every file in order; blank lines are ignored."""
        for path in fhir_files(self.folder, "*.ndjson"):
            rel = path.relative_to(self.folder).as_posix()
            try:
                handle = path.open("rb")
            except OSError as exc:
                yield Skipped(rel, f"unreadable: {exc.strerror or exc}")
                continue
            with handle:
                lineno = 0
                try:
                    for lineno, line in enumerate(handle, start=1):
                        if not line.strip():
                            continue
                        if progress:
                            progress(1)
                        yield self._item(line, f"{rel}:{lineno}")
                except OSError as exc:
                    yield Skipped(f"{rel}:{lineno + 1}", f"unreadable: {exc.strerror or exc}")

    @staticmethod
    def _item(line: bytes, where: str) -> FhirItem | Skipped:
        try:
            data = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            return Skipped(where, parse_error(exc))
        try:
            resource_type = validate(data)
        except InvalidResource as exc:
            return Skipped(where, str(exc))
        return FhirItem(resource_type, data, where)
