"""Statistical disclosure control of a table an output holds (CSV, TSV, a Markdown table).

A table is a header (the leading rows with no number after the first column, joined, so the
two or three header rows of a pandas/ACRO crosstab are understood) and data rows. Each
column is classified from its values:

- a *count* column: whole numbers >= 0 (also written 12.0) under any name but the ones of
  non-counts (age, year, mean, p, ...). Every positive count below `min_count` blocks the
  file, naming the cell; a zero is a review (or blocks, or passes: `OutputRules.zeros`),
  since a group with none can itself disclose ("no patient of this site had a negative
  test"). Suppression markers (empty, NA, *, <10, [c], suppressed...) are not counts.
- a pandas index (an unnamed first column 0, 1, 2, ...) is skipped.
- a *magnitude* column: other numbers (means, sums, estimates). Dominance (N largest
  contributors over k of the cell) and the p-ratio need each cell's contributions, which a
  table does not show: such a table goes to review unless ACRO checked it (see acro.py).
- percentages and rates (by their name) are derived from the counts and not checked apart.
- *key* columns: text and whole-number categories (age, year, ...). In an aggregate table
  each combination of keys appears once; rows that repeat the same categories are
  record-level data. A column of distinct id-like values, or of exact dates, is record-level
  too. Every cell is also looked up among the extract's ids and dates.
- with a total column (or row), a row (or column) with exactly one suppressed cell can be
  recovered by subtraction: review.

`dominance_violated` and `p_ratio_violated` are the two magnitude rules, for callers that
know the contributions (they follow ACRO's definitions).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from spe.airlock.report import Verdict
from spe.airlock.rules import OutputRules
from spe.airlock.scan import DATE, redact, value_category
from spe.airlock.terms import UID_RE, ExtractTerms, parse_day

LISTED = 5  # cells named per kind of problem; the rest are counted

_MARKER_WORDS = {"", "na", "n/a", "nan", "null", "none", "-", "–", "—", "*", "**", "x", "c",
                 "[c]", "[x]", "[z]", "..", ".", "suppressed", "redacted", "<na>", "masked"}
_MARKER_RE = re.compile(r"^(?:[<≤]|&lt;)\s*=?\s*\d+$")
_NON_COUNT = re.compile(
    r"(^|[\s_\-.(])(age|year|yr|month|week|day|date|time|mean|avg|average|median|sd|std|se|"
    r"sem|var|variance|min|max|minimum|maximum|iqr|q1|q3|p|pval|p_value|pvalue|percent|pct|"
    r"perc|%|rate|ratio|prop|proportion|ci|lcl|ucl|lower|upper|lo|hi|beta|coef|estimate|est|"
    r"or|hr|rr|score|rank|dose|value|weight|height|bmi|duration|id|code|index|"
    r"version|threshold|dof|df|chi2)($|[\s_\-.)])", re.IGNORECASE)
_KEYISH = re.compile(r"(^|[\s_\-.])(age|year|yr|month|week|day|band|group|grp|class|"
                     r"category|cat|level|stratum|decade|quarter|code|rank)", re.IGNORECASE)
_TOTAL = re.compile(r"^\s*(total|all|sum|overall|totals)\s*$", re.IGNORECASE)
_IDLIKE = re.compile(r"^(?=(?:.*\d){2})(?=(?:.*[A-Za-z]){2})[A-Za-z0-9]{8,}$|^\d{6,}$|"
                     r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                     re.IGNORECASE)
_ID_NAME = re.compile(r"(^|[\s_\-.])(id|mrn|pid|patient|subject|person|accession)($|[\s_\-.])",
                      re.IGNORECASE)
_DERIVED = re.compile(r"(^|[\s_\-.(])(percent|pct|perc|%|prop|proportion|share|rate)"
                      r"($|[\s_\-.)])", re.IGNORECASE)


def is_marker(value: str) -> bool:
    text = value.strip().lower()
    return text in _MARKER_WORDS or bool(_MARKER_RE.match(text))


def as_number(value: str) -> float | None:
    text = value.strip()
    if not text or text.lower() in {"nan", "inf", "-inf", "infinity"}:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass
class TableResult:
    flags: list[tuple[Verdict, str]] = field(default_factory=list)
    magnitude_columns: list[str] = field(default_factory=list)
    count_cells: int = 0
    rows: int = 0

    def add(self, verdict: Verdict, reason: str) -> None:
        self.flags.append((verdict, reason))


@dataclass
class _Column:
    index: int
    name: str
    values: list[str]
    numbers: list[float | None]
    markers: list[bool]
    numeric: bool = False
    integer: bool = False
    role: str = "key"  # key, count, magnitude, derived, index, empty


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:LISTED])
    return shown + (f"; and {len(items) - LISTED} more" if len(items) > LISTED else "")


def check_table(rows: Sequence[Sequence[str]], rules: OutputRules,
                terms: ExtractTerms | None = None, *,
                row_numbers: Sequence[int] | None = None, unit: str = "row") -> TableResult:
    """Check one table; `row_numbers` are what each row is called in reasons (default:
    its 1-based record number in the file, the header included)."""
    result = TableResult()
    numbered = [(row_numbers[i] if row_numbers is not None else i + 1, [c.strip() for c in row])
                for i, row in enumerate(rows)]
    numbered = [(n, r) for n, r in numbered if any(r)]
    if not numbered:
        return result
    width = max(len(r) for _, r in numbered)
    numbered = [(n, r + [""] * (width - len(r))) for n, r in numbered]

    # header rows: leading rows with no number after the first column
    header_count = 0
    for _, row in numbered:
        rest = row[1:] if width > 1 else row
        if any(as_number(c) is not None for c in rest):
            break
        header_count += 1
        if width == 1:
            break
    if header_count == len(numbered):
        header_count = min(1, header_count)
    header, data = numbered[:header_count], numbered[header_count:]
    result.rows = len(data)
    names = []
    for j in range(width):
        parts = [row[j] for _, row in header if row[j]]
        names.append("/".join(dict.fromkeys(parts)) or f"column {j + 1}")

    # the extract's ids and dates, in the header too
    if terms is not None and len(terms):
        for _, row in header:
            for j, cell in enumerate(row):
                if cell and (category := value_category(cell, terms)):
                    result.add("blocked", f"the header of column {j + 1} holds a {category} "
                                          f"from the extract ({_shown(cell, category)})")
    if not data:
        return result

    columns = [_classify(j, names[j], [row[j] for _, row in data]) for j in range(width)]
    numbers_of = [n for n, _ in data]

    for col in columns:
        _check_extract_terms(col, numbers_of, terms, unit, result)
        _check_record_level_column(col, len(data), result)

    _check_counts(columns, numbers_of, rules, unit, result)
    _check_repeated_keys(columns, numbers_of, unit, result)
    _check_recoverable(columns, numbers_of, unit, result)
    result.magnitude_columns = [c.name for c in columns if c.role == "magnitude"]
    return result


def _classify(j: int, name: str, values: list[str]) -> _Column:
    markers = [is_marker(v) for v in values]
    numbers = [None if m else as_number(v) for v, m in zip(values, markers, strict=True)]
    col = _Column(j, name, values, numbers, markers)
    present = [x for x, m in zip(numbers, markers, strict=True) if not m]
    if not present:
        col.role = "empty"
        return col
    col.numeric = all(x is not None for x in present)
    if not col.numeric:
        return col  # a text column: a key
    col.integer = all(float(x).is_integer() for x in present)
    unnamed = name in {f"column {j + 1}", "Unnamed: 0", "index"}
    if col.integer and j == 0 and unnamed and present == [float(i) for i in
                                                          range(len(present))]:
        col.role = "index"
    elif col.integer and all(x >= 0 for x in present) and not _NON_COUNT.search(name):
        col.role = "count"
    elif col.integer and _KEYISH.search(name):
        col.role = "key"
    elif _DERIVED.search(name):
        col.role = "derived"  # percentages and rates of the counts beside them
    else:
        col.role = "magnitude"
    return col


def _shown(value: str, category: str) -> str:
    if category == DATE:
        day = parse_day(value)
        return f"{day.year:04d}-…" if day else "a date"
    return redact(value)


def _check_extract_terms(col: _Column, rows: list[int], terms: ExtractTerms | None,
                         unit: str, result: TableResult) -> None:
    if terms is None or not len(terms):
        return
    found: dict[str, list[str]] = {}
    for value, row in zip(col.values, rows, strict=True):
        if value and (category := value_category(value, terms)):
            found.setdefault(category, []).append(f"{_shown(value, category)} ({unit} {row})")
    for category, where in found.items():
        plural = "s" if len(where) > 1 else ""
        result.add("blocked", f'column "{col.name}" holds {len(where)} {category}{plural} from '
                              f"the extract: {_listing(where)}")


def _check_record_level_column(col: _Column, n_rows: int, result: TableResult) -> None:
    present = [v for v, m in zip(col.values, col.markers, strict=True) if not m]
    if not present:
        return
    days = [v for v in present if len(v) >= 8 and parse_day(v) is not None]
    if len(days) * 2 > len(present):
        result.add("blocked", f'column "{col.name}" holds {len(days)} exact dates: record-level '
                              "or disclosive; aggregate to month or year")
        return
    if n_rows < 5 or col.role in {"count", "index", "derived"} or (
            col.numeric and not _ID_NAME.search(col.name)):
        return
    idlike = [v for v in present if _IDLIKE.match(v) or UID_RE.fullmatch(v)]
    if len(set(present)) == len(present) == n_rows and len(idlike) * 5 >= len(present) * 4:
        result.add("blocked", f'column "{col.name}" holds a distinct id-like value in every row '
                              f"({len(present)}): record-level data")


def _check_counts(columns: list[_Column], rows: list[int], rules: OutputRules, unit: str,
                  result: TableResult) -> None:
    small: list[str] = []
    zeros: list[str] = []
    for col in columns:
        if col.role != "count":
            continue
        for x, row in zip(col.numbers, rows, strict=True):
            if x is None:
                continue
            result.count_cells += 1
            value = int(x)
            if 0 < value < rules.min_count:
                small.append(f'cell of {value} at {unit} {row}, column "{col.name}"')
            elif value == 0:
                zeros.append(f'{unit} {row}, column "{col.name}"')
    if small:
        result.add("blocked", f"{len(small)} count{'s' if len(small) > 1 else ''} below the "
                              f"threshold of {rules.min_count}: {_listing(small)}")
    if zeros and rules.zeros != "allow":
        verdict: Verdict = "blocked" if rules.zeros == "block" else "review"
        result.add(verdict, f"{len(zeros)} zero count{'s' if len(zeros) > 1 else ''} (a zero "
                            f"may be disclosive): {_listing(zeros)}")


def _check_repeated_keys(columns: list[_Column], rows: list[int], unit: str,
                         result: TableResult) -> None:
    keys = [c for c in columns if c.role == "key"]
    if not keys or len(rows) < 2:
        return
    first_seen: dict[tuple[str, ...], int] = {}
    repeats: list[str] = []
    for i, row in enumerate(rows):
        key = tuple(c.values[i] for c in keys)
        if not any(key):
            continue
        if key in first_seen:
            repeats.append(f"{unit} {row} repeats {unit} {first_seen[key]}")
        else:
            first_seen[key] = row
    if not repeats:
        return
    names = ", ".join(f'"{c.name}"' for c in keys)
    if len(repeats) >= max(2, len(rows) // 10):
        result.add("blocked", f"{len(repeats)} rows repeat the same categories ({names}): "
                              f"looks like record-level data, not an aggregate table: "
                              f"{_listing(repeats)}")
    else:
        result.add("review", f"rows repeat the same categories ({names}): {_listing(repeats)}")


def _check_recoverable(columns: list[_Column], rows: list[int], unit: str,
                       result: TableResult) -> None:
    counts = [c for c in columns if c.role in {"count", "empty"}]
    totals = [c for c in counts if _TOTAL.match(c.name)]
    inner = [c for c in counts if not _TOTAL.match(c.name)]
    found: list[str] = []
    if totals and len(inner) > 1:
        for i, row in enumerate(rows):
            suppressed = [c for c in inner if c.markers[i] and c.values[i] != ""]
            if len(suppressed) == 1 and totals[0].numbers[i] is not None:
                found.append(f'{unit} {row}, column "{suppressed[0].name}"')
    keys = [c for c in columns if c.role == "key"]
    total_rows = [i for i in range(len(rows)) if keys and _TOTAL.match(keys[0].values[i])]
    if total_rows and len(rows) > 2:
        t = total_rows[0]
        for col in inner:
            suppressed = [i for i in range(len(rows))
                          if i != t and col.markers[i] and col.values[i] != ""]
            if len(suppressed) == 1 and col.numbers[t] is not None:
                found.append(f'{unit} {rows[suppressed[0]]}, column "{col.name}"')
    if found:
        result.add("review", "a single suppressed cell beside a shown total can be recovered "
                             f"by subtraction: {_listing(found)}")


# Magnitude rules, as ACRO defines them -------------------------------------------------------

def dominance_violated(contributions: Iterable[float], n: int = 2, k: float = 0.90) -> bool:
    """N-K rule: the `n` largest contributions make up more than `k` of the cell's total."""
    values = sorted((abs(float(c)) for c in contributions), reverse=True)
    total = sum(values)
    return total > 0 and sum(values[:n]) / total > k


def p_ratio_violated(contributions: Iterable[float], p: float = 0.10) -> bool:
    """p-ratio rule: what is left after the two largest is less than `p` of the largest, so
    the second largest contributor can estimate the largest to within p. Fewer than three
    contributors always violate it."""
    values = sorted((abs(float(c)) for c in contributions), reverse=True)
    if len(values) < 3 or values[0] <= 0:
        return len(values) > 0 and sum(values) > 0
    return (sum(values) - values[0] - values[1]) / values[0] < p


def markdown_tables(text: str) -> list[tuple[list[list[str]], list[int]]]:
    """The pipe tables of a Markdown text: (rows, line number of each row)."""
    tables: list[tuple[list[list[str]], list[int]]] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                continue  # the alignment row
            rows.append(cells)
            lines.append(number)
            continue
        if rows:
            tables.append((rows, lines))
            rows, lines = [], []
    if rows:
        tables.append((rows, lines))
    return tables
