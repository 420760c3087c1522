"""Looking for the extract's ids, UIDs and exact dates in the text of an output.

Text is cut into tokens (letters and digits joined by `. _ : / -`); a token, each part of
it between separators, and each written backwards, is looked up among the extract's ids,
so `ABCD2345EFGH6789.png`, `Patient/abc123` and `urn:oid:2.25.1234` are all found. The
text's letters and digits are then searched at once for every long term in the forms of
`encodings.py` (split, joined, reversed, hex, base64, as a number). Dates are found in the
usual spellings (2019-03-05, 20190305, 05/03/2019 and 03/05/2019, 5 March 2019, March 5,
2019, ISO week dates 2019-W10-2) and compared as days with the extract's dates; whole
numbers that are the extract's days counted from an epoch are found too (`dayoffsets.py`).
A finding names its category, its form and its line, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from spe.airlock.dayoffsets import day_number_epoch, day_numbers
from spe.airlock.encodings import AS_WRITTEN, MIN_COMPACT, REVERSED, CompactText, compact
from spe.airlock.lines import Lines
from spe.airlock.report import Place, Verdict, where
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
    (re.compile(r"(?<![\dA-Za-z])(\d{4})-?W(\d{2})-?([1-7])(?!\d)", re.IGNORECASE), "iso-week"),
]
_INTEGER = re.compile(r"(?<![\d.,])-?\d{4,7}(?![\d]|[.,]\d)")
_LONG = re.compile(r"(?<![\d.])\d{10,}(?![\d]|\.\d)")


@dataclass(frozen=True)
class Finding:
    category: str  # patient id, accession number, UID, record id, exact date, ...
    form: str  # as written, reversed, hex, base64, a number, day numbers since ...
    line: int


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
            elif form == "iso-week":
                try:
                    candidates.append(date.fromisocalendar(
                        int(groups[0]), int(groups[1]), int(groups[2])))
                except ValueError:
                    pass
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


def _token_hit(token: str, terms: ExtractTerms) -> tuple[str, str] | None:
    for candidate in _candidates(token):
        if category := terms.lookup(candidate):
            return category, AS_WRITTEN
        if category := terms.lookup(candidate[::-1]):
            return category, REVERSED
    return None


def value_category(value: str, terms: ExtractTerms) -> str | None:
    """What of the extract a single value (a table cell, a name) is or contains, if any."""
    for match in _TOKEN.finditer(value):
        if hit := _token_hit(match.group(), terms):
            return hit[0]
    if terms._index and len(value) >= MIN_COMPACT:
        for hit in terms.automaton.search(compact(value)):
            return hit.category
    if terms.dates and len(value) >= 6 and any(c.isdigit() for c in value):
        for day, _ in find_dates(value):
            if day in terms.dates:
                return DATE
    return None


def scan_text(text: str, terms: ExtractTerms, *, limit: int = 200) -> list[Finding]:
    """The extract's ids and dates found in `text`, in any form (at most `limit`)."""
    found: dict[tuple[int, str], Finding] = {}

    def add(line: int, category: str, form: str) -> None:
        if len(found) < limit:
            found.setdefault((line, category), Finding(category, form, line))

    line_at = Lines(text).at

    if terms._index:
        known: dict[str, tuple[str, str] | None] = {}  # tokens repeat: look each up once
        for match in _TOKEN.finditer(text):
            token = match.group()
            if token not in known:
                known[token] = _token_hit(token, terms)
            if hit := known[token]:
                add(line_at(match.start()), *hit)
        packed = CompactText(text)
        for hit in terms.automaton.search(packed.text):
            add(packed.line_of(hit.start), hit.category, hit.form)
    if terms.dates:
        for day, offset in find_dates(text):
            if day in terms.dates:
                add(line_at(offset), DATE, AS_WRITTEN)
        numbers = [(int(m.group()), m.start()) for m in _INTEGER.finditer(text)]
        epoch = day_number_epoch([n for n, _ in numbers], terms.dates)
        if epoch:
            days = day_numbers(epoch, terms.dates)
            for number, offset in numbers:
                if number in days:
                    add(line_at(offset), DATE, f"as {epoch}")
    return sorted(found.values(), key=lambda f: f.line)


def long_numbers(text: str) -> list[Place]:
    """Whole numbers of 10 or more digits: identifiers (or encodings), not quantities."""
    lines = Lines(text)
    return [Place(rule="long-number", line=lines.at(m.start())) for m in _LONG.finditer(text)]


def summarise(findings: list[Finding], where_unit: str = "line"
              ) -> list[tuple[Verdict, str, list[Place]]]:
    """One blocking reason per category and form: how many, and their places."""
    grouped: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        grouped.setdefault((finding.category, finding.form), []).append(finding)
    out: list[tuple[Verdict, str, list[Place]]] = []
    for (category, form), items in grouped.items():
        places = [Place(rule="extract-term", line=f.line) for f in items]
        plural = "s" if len(items) > 1 else ""
        how = "" if form == AS_WRITTEN else f" ({form})"
        out.append(("blocked", f"{len(items)} {category}{plural} from the extract{how}: "
                               f"{where(places, where_unit)}", places))
    return out


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
