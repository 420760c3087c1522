"""What the airlock says about an output directory: a verdict per file, with reasons.

A reason names the rule and the places it found (line or row, column by number) and never
the value found there, nor any text the job wrote (a column's name, ACRO's summary): the
researcher reads the reasons of a blocked file, so a reason must not carry what the file
was blocked for ("cell of 2 at row 5" told the small count). The places also go, as data,
to the output checkers' review page, which highlights them in the file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Verdict = Literal["pass", "review", "blocked"]

_RANK: dict[str, int] = {"pass": 0, "review": 1, "blocked": 2}
#: What is shown, instead of a verdict, for outputs that are not there (a job that left
#: nothing, or whose part failed so that only its log leaves): nothing passed a check.
NO_VERDICT = "none"


def worst(*verdicts: Verdict) -> Verdict:
    """The strictest of the verdicts ("pass" for none: the checks' internal starting point;
    what is shown to people for no outputs is `AirlockReport.shown_verdict`'s "none")."""
    return max(verdicts, key=_RANK.__getitem__, default="pass")


class Place(BaseModel):
    """Where in a file a rule found something: `line` (1-based, in the text) and `column`
    (1-based, in a table), when they apply."""

    rule: str
    line: int | None = None
    column: int | None = None

    def words(self, unit: str = "line") -> str:
        parts = [f"{unit} {self.line}" if self.line is not None else "",
                 f"column {self.column}" if self.column is not None else ""]
        return ", ".join(p for p in parts if p) or "the whole file"


MAX_PLACES = 200  # per file: enough for a checker to find them, bounded for the report
LISTED = 5  # places named in one reason; the rest are counted


def where(places: list[Place], unit: str = "line") -> str:
    """The first few places in words, and how many more."""
    shown = "; ".join(p.words(unit) for p in places[:LISTED])
    more = len(places) - LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


def places_from(items: object) -> list[dict]:
    """Places as another party sent them (a node's report), kept only when well formed."""
    out: list[dict] = []
    for item in items if isinstance(items, list) else []:
        try:
            out.append(Place.model_validate(item).model_dump())
        except ValueError:
            continue
        if len(out) >= MAX_PLACES:
            break
    return out


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
    places: list[Place] = Field(default_factory=list)

    def flag(self, verdict: Verdict, reason: str, places: list[Place] = ()) -> None:
        """Add a reason (and the places it names); the verdict only ever gets stricter."""
        if verdict == "pass":
            self.notes.append(reason)
            return
        if reason not in self.reasons:
            self.reasons.append(reason)
        room = MAX_PLACES - len(self.places)
        self.places.extend(list(places)[:max(room, 0)])
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

    def shown_verdict(self) -> str:
        """The verdict to show for these outputs: `verdict`, or `NO_VERDICT` ("none") when
        there is nothing to have one (no file and no report-wide reason), never "pass"."""
        return self.verdict if self.files or self.reasons else NO_VERDICT

    def file(self, path: str) -> FileVerdict:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)
