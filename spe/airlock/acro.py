"""ACRO's own verdicts, read from the `results.json` its `finalise()` writes.

ACRO (the SACRO project's checker, `acro` on PyPI) records one entry per output under
`results`: `{"uid": "output_0", "status": "pass"|"review"|"fail", "type": "table", "summary":
"fail; threshold: 3 cells may need suppressing; ", "exception": "...", "files": [{"name":
"output_0_0.csv", "sdc": {"summary": {"suppressed": false, "threshold": 3, "p-ratio": 0,
"nk-rule": 0, ...}, "cells": {...}}}], ...}`, writes the files beside `results.json` and a
SHA-256 of each file into `checksums/<name>.txt`. Its session summary (and the CSV copy of
it) is marked DO_NOT_RELEASE: it is for the output checker.

Nothing written inside the sandbox is evidence of anything but what the job wanted to say:
a job can write ACRO's `results.json` itself, "pass" for every file, with checksums it
computed. So ACRO's word never relaxes a check: a `fail` blocks the file and a `review`
sends it to review (a job may always be stricter with itself), a `pass` is a note. The
airlock runs its own checks, outside the sandbox, on the files themselves (tables.py,
jsondoc.py, prose.py: the threshold wherever a count is written; magnitudes to review).
ACRO's own words (its summary, the researcher's exception request) stay in results.json
for the output checker and are never quoted in a reason: the job wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DO_NOT_RELEASE = "DO_NOT_RELEASE"


@dataclass
class AcroOutput:
    uid: str
    status: str
    summary: str
    output_type: str
    exception: str
    files: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def for_checker_only(self) -> bool:
        """ACRO's session summaries: marked in the uid (`...-DONT_RELEASE`, ACRO 1.x), a
        file name (DO_NOT_RELEASE) or a comment ("DO NOT RELEASE - ...")."""
        marks = [self.uid, *self.files, *self.comments]
        return any(m in text.upper().replace(" ", "_") for text in marks
                   for m in (DO_NOT_RELEASE, "DONT_RELEASE"))

    def reason(self) -> str:
        """What results.json says of the file, in the airlock's words only."""
        status = self.status if self.status in {"pass", "review", "fail"} else "unknown"
        text = f"ACRO's results.json (written inside the job) marks it {status}"
        return text + ("; it asks for an exception (read results.json)" if self.exception
                       else "")


def is_acro_results(data: Any) -> bool:
    """Whether parsed JSON has the shape of ACRO's results.json."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        return False
    entries = list(data["results"].values())
    return bool(entries) and all(isinstance(e, dict) and "status" in e and "files" in e
                                 for e in entries)


def acro_outputs(data: dict[str, Any]) -> list[AcroOutput]:
    outputs = []
    for key, entry in data["results"].items():
        names = []
        for item in entry.get("files") or []:
            name = item.get("name") if isinstance(item, dict) else item
            if isinstance(name, str) and name:
                names.append(name)
        outputs.append(AcroOutput(
            uid=str(entry.get("uid", key)),
            status=str(entry.get("status", "")).strip().lower(),
            summary=str(entry.get("summary", "") or ""),
            output_type=str(entry.get("type", "output")),
            exception=str(entry.get("exception", "") or ""),
            files=names,
            comments=[str(c) for c in entry.get("comments") or [] if c],
        ))
    return outputs
