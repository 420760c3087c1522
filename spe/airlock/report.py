"""What the airlock says about an output directory: a verdict per file, with reasons."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Verdict = Literal["pass", "review", "blocked"]

_RANK: dict[str, int] = {"pass": 0, "review": 1, "blocked": 2}


def worst(*verdicts: Verdict) -> Verdict:
    """The strictest of the verdicts ("pass" for none)."""
    return max(verdicts, key=_RANK.__getitem__, default="pass")


class FileVerdict(BaseModel):
    """One entry of the output directory.

    `path` is relative to the output directory, POSIX style. `kind` is what the content is
    (detected from the bytes, not the name): table, text, markdown, json, image, pdf, svg,
    acro-metadata, dicom, ndjson, fhir-json, archive, opaque, binary, symlink, fifo, socket,
    device, directory, unreadable. `reasons` explain a verdict other than pass; `notes` are
    for the output checker and never change the verdict (e.g. what ACRO said of a passing
    table).
    """

    path: str
    size: int
    kind: str
    verdict: Verdict = "pass"
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def flag(self, verdict: Verdict, reason: str) -> None:
        """Add a reason; the verdict only ever gets stricter."""
        if verdict == "pass":
            self.notes.append(reason)
            return
        self.reasons.append(reason)
        self.verdict = worst(self.verdict, verdict)


class AirlockReport(BaseModel):
    """The automatic checks of one output directory, before any person looks at it.

    `verdict` is the strictest of the files' verdicts and of the report-wide `reasons`
    (total size, number of files, an output directory that is not a directory).
    """

    verdict: Verdict = "pass"
    files: list[FileVerdict] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    total_bytes: int = 0
    rules: dict = Field(default_factory=dict)

    def block(self, reason: str) -> None:
        self.reasons.append(reason)
        self.verdict = "blocked"

    def finish(self) -> AirlockReport:
        self.files.sort(key=lambda f: f.path)
        self.verdict = worst(self.verdict, *(f.verdict for f in self.files))
        return self

    def file(self, path: str) -> FileVerdict:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)
