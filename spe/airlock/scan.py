"""Looking for the extract's ids, UIDs and exact dates in the text of an output.

Text is cut into tokens (letters and digits joined by `. _ : / -`); a token, and each part
of it between separators, is looked up among the extract's ids, so `ABCD2345EFGH6789.png`,
`Patient/abc123` and `urn:oid:2.25.1234` are all found. Dates are found in the usual
spellings (2019-03-05, 20190305, 05/03/2019 and 03/05/2019, 5 March 2019, March 5, 2019)
and compared as days with the extract's dates. Findings never carry the whole value: only a
prefix (ids) or the year (dates), so the airlock report is not itself a leak.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from spe.airlock.terms import ExtractTerms

DATE = "exact date"
WITHHELD = "[line withheld by the airlock"

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[._:/\-][A-Za-z0-9]+)*")
_SPLIT_KEEP_DOTS = re.compile(r"[_:/\-]")
_SPLIT_ALL = re.compile(r"[._:/\-]")

_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_DATES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)"), "ymd"),
    (re.compile(r"(?<!\d)(\d{4})/(\d{1,2})/(\d{1,2})(?!\d)"), "ymd"),
    (re.compile(r"(?<![\d.])(\d{4})(\d{2})(\d{2})(?![\d])"), "ymd"),
    (re.compile(r"(?<![\d.])(\d{1,2})[./\-](\d{1,2})[./\-](\d{4})(?!\d)"), "dmy|mdy"),
    (re.compile(r"(?<!\d)(\d{1,2})(?:st|nd|rd|th)?\s+" + _MONTH + r",?\s+(\d{4})(?!\d)",
                re.IGNORECASE), "d-mon-y"),
    (re.compile(_MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})(?!\d)", re.IGNORECASE),
     "mon-d-y"),
]


@dataclass(frozen=True)
class Finding:
    category: str  # patient id, accession number, UID, record id, exact date
    shown: str  # a redacted form: a prefix of an id, the year of a date
    line: int


def redact(value: str) -> str:
    """Enough of an id for a person to find it in the file, not enough to use it."""
    keep = max(3, len(value) // 4)
    return value[:keep] + "…" if len(value) > keep else "…"


def _day(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def find_dates(text: str) -> Iterator[tuple[date, int]]:
    """Every day-precise date written in `text`, with its offset (both readings of a/b/yyyy)."""
    for pattern, form in _DATES:
        for match in pattern.finditer(text):
            groups = match.groups()
            candidates: list[date | None] = []
            if form == "ymd":
                candidates.append(_day(int(groups[0]), int(groups[1]), int(groups[2])))
            elif form == "dmy|mdy":
                a, b, y = int(groups[0]), int(groups[1]), int(groups[2])
                candidates += [_day(y, b, a), _day(y, a, b)]
            elif form == "d-mon-y":
                candidates.append(_day(int(groups[2]), _MONTHS[groups[1][:3].lower()],
                                       int(groups[0])))
            else:
                candidates.append(_day(int(groups[2]), _MONTHS[groups[0][:3].lower()],
                                       int(groups[1])))
            for day in dict.fromkeys(candidates):
                if day is not None:
                    yield day, match.start()


def _candidates(token: str) -> Iterator[str]:
    yield token
    for splitter in (_SPLIT_KEEP_DOTS, _SPLIT_ALL):
        parts = splitter.split(token)
        if len(parts) > 1:
            yield from parts
    # "ABCD2345EFGH6789.png": the stem without a file extension
    stem, dot, ext = token.rpartition(".")
    if dot and ext.isalpha():
        yield stem


def value_category(value: str, terms: ExtractTerms) -> str | None:
    """What of the extract a single value (a table cell, a name) is or contains, if any."""
    for match in _TOKEN.finditer(value):
        for candidate in _candidates(match.group()):
            category = terms.lookup(candidate)
            if category:
                return category
    if terms.dates:
        for day, _ in find_dates(value):
            if day in terms.dates:
                return DATE
    return None


def scan_text(text: str, terms: ExtractTerms, *, limit: int = 200) -> list[Finding]:
    """The extract's ids and dates found in `text` (at most `limit` findings)."""
    hits: list[tuple[int, str, str]] = []
    if terms._index:
        for match in _TOKEN.finditer(text):
            for candidate in _candidates(match.group()):
                category = terms.lookup(candidate)
                if category:
                    hits.append((match.start(), category, redact(candidate)))
                    break
            if len(hits) >= limit:
                break
    if terms.dates and len(hits) < limit:
        seen: set[int] = set()
        for day, offset in find_dates(text):
            if day in terms.dates and offset not in seen:
                seen.add(offset)
                hits.append((offset, DATE, f"{day.year:04d}-…"))
                if len(hits) >= limit:
                    break
    hits.sort()
    return [Finding(category, shown, text.count("\n", 0, offset) + 1)
            for offset, category, shown in hits]


def summarise(findings: list[Finding], where: str = "line") -> list[str]:
    """One reason per category: how many, and the first few (redacted) with their place."""
    by_category: dict[str, list[Finding]] = {}
    for finding in findings:
        by_category.setdefault(finding.category, []).append(finding)
    reasons = []
    for category, found in by_category.items():
        plural = "s" if len(found) > 1 else ""
        first = ", ".join(f"{f.shown} ({where} {f.line})" for f in found[:3])
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        reasons.append(f"{len(found)} {category}{plural} from the extract: {first}{more}")
    return reasons


def withhold_lines(text: str, terms: ExtractTerms) -> tuple[str, int]:
    """`text` with every line that names an id or exact date of the extract replaced by a
    notice; and how many lines were withheld. A job's log reaches its researcher without
    a human review, so it must not carry what the airlock would block in a file."""
    lines, withheld = text.split("\n"), 0
    for number, line in enumerate(lines):
        category = value_category(line, terms)
        if category:
            lines[number] = f"{WITHHELD}: it names a {category} of the extract]"
            withheld += 1
    return "\n".join(lines), withheld
