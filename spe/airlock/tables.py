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
- a table with no count at all (only text and categories: a list, or records written as
  text) cannot show that its groups reach the threshold: review. Whole numbers under the
  threshold in a column not named as a count may be counts: review. Numbers of 10 or more
  digits are identifiers, not quantities; whole numbers that are the extract's days counted
  from an epoch are its dates.
- a model's coefficient table (estimate, std err, z/t, p, CI columns) is not a table of
  magnitudes of cells; ACRO's rule for models applies: the residual degrees of freedom
  (a df_resid, nobs or observations cell) must reach the threshold, else review.

Reasons name the rule and the places (row, column by number), never a value nor a
column's name (the job chose it).

`dominance_violated` and `p_ratio_violated` are the two magnitude rules, for callers that
know the contributions (they follow ACRO's definitions).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from spe.airlock.dayoffsets import day_number_epoch
from spe.airlock.report import Place, Verdict, where
from spe.airlock.rules import OutputRules
from spe.airlock.scan import value_category
from spe.airlock.terms import UID_RE, ExtractTerms, parse_day

_MARKER_WORDS = {"", "na", "n/a", "nan", "null", "none", "-", "–", "—", "*", "**", "x", "c",
                 "[c]", "[x]", "[z]", "..", ".", "suppressed", "redacted", "<na>", "masked"}
_MARKER_RE = re.compile(r"^(?:[<≤]|&lt;)\s*=?\s*\d+$")
_NON_COUNT = re.compile(
    r"(^|[\s_\-.(])(age|year|yr|month|week|day|date|time|mean|avg|average|median|sd|std|se|"
    r"sem|var|variance|min|max|minimum|maximum|iqr|q1|q3|p|pval|p_value|pvalue|percent|pct|"
    r"perc|%|rate|ratio|prop|proportion|ci|lcl|ucl|lower|upper|lo|hi|beta|coef|estimate|est|"
    # a classifier's figures (a model's disclosure report: AUC, TPR at an FPR, advantage)
    r"auc|tpr|fpr|accuracy|advantage|baseline|share|"
    r"or|hr|rr|score|rank|dose|value|weight|height|bmi|duration|id|code|index|"
    r"version|threshold|dof|df|chi2|"
    # a computation's settings, not people
    r"folds?|seed|random_state|epochs?|iter|iterations?|steps?|lag|bins?|k|depth|layers?|"
    r"n_estimators|n_jobs|batch_size|patience)($|[\s_\-.)])", re.IGNORECASE)
_KEYISH = re.compile(r"(^|[\s_\-.])(age|year|yr|month|week|day|band|group|grp|class|"
                     r"category|cat|level|stratum|decade|quarter|code|rank)", re.IGNORECASE)
_TOTAL = re.compile(r"^\s*(total|all|sum|overall|totals)\s*$", re.IGNORECASE)
_IDLIKE = re.compile(r"^(?=(?:.*\d){2})(?=(?:.*[A-Za-z]){2})[A-Za-z0-9]{8,}$|^\d{6,}$|"
                     r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                     re.IGNORECASE)
_ID_NAME = re.compile(r"(^|[\s_\-.])(id|mrn|pid|patient|subject|person|accession)($|[\s_\-.])",
                      re.IGNORECASE)
_MODEL = re.compile(r"^\s*(coef|coefficient|coefficients|estimate|estimates|beta|b|"
                    r"log[\s_-]?odds|odds[\s_-]?ratio|or|hr|rr|irr|std[\s._]*err(or)?|se|"
                    r"[zt]|[zt][\s_-]?value|p|p[\s_-]?value|pr\(>\|[zt]\|\)|p>\|[zt]\||"
                    r"\[?0\.025\]?|\[?0\.975\]?|ci[\s_-]?(low|lower|high|upper)|"
                    r"(lower|upper)[\s_-]?ci|conf[\s._-]?(low|high))\s*$", re.IGNORECASE)
_DOF = re.compile(r"^\s*(df[\s_.-]?resid(uals?)?|residual[\s_-]?df|dof|nobs|n[\s_.-]?obs|"
                  r"no\.?\s*observations|observations|n)\s*:?\s*$", re.IGNORECASE)
_DERIVED = re.compile(r"(^|[\s_\-.(])(percent|pct|perc|%|prop|proportion|share|rate|"
                      r"survival|surv|cum_?inc|incidence|prevalence|risk)"
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


NO_COUNT_ROWS = 10  # rows of text with no count that go to review however distinct


@dataclass
class TableResult:
    flags: list[tuple[Verdict, str, list[Place]]] = field(default_factory=list)
    magnitude_columns: list[int] = field(default_factory=list)  # 1-based
    count_cells: int = 0
    rows: int = 0
    unit: str = "row"

    def add(self, verdict: Verdict, reason: str, places: list[Place] = ()) -> None:
        self.flags.append((verdict, reason, list(places)))

    def at(self, text: str, places: list[Place]) -> str:
        """`text` and where."""
        return f"{text}: {where(places, self.unit)}" if places else text


@dataclass
class _Column:
    index: int
    name: str
    values: list[str]
    numbers: list[float | None]
    markers: list[bool]
    numeric: bool = False
    integer: bool = False
    role: str = "key"  # key, count, magnitude, derived, model, index, empty

    @property
    def number(self) -> int:
        return self.index + 1

    def place(self, rule: str, row: int) -> Place:
        return Place(rule=rule, line=row, column=self.number)


def check_table(rows: Sequence[Sequence[str]], rules: OutputRules,
                terms: ExtractTerms | None = None, *,
                row_numbers: Sequence[int] | None = None, unit: str = "row") -> TableResult:
    """Check one table; `row_numbers` are what each row is called in reasons (default:
    its 1-based record number in the file, the header included)."""
    result = TableResult(unit=unit)
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
        for n, row in header:
            for j, cell in enumerate(row):
                if cell and (category := value_category(cell, terms)):
                    place = Place(rule="extract-term", line=n, column=j + 1)
                    result.add("blocked", result.at(f"a header holds a "
                                                    f"{category} from the extract", [place]),
                               [place])
    if not data:
        return result

    columns = [_classify(j, names[j], [row[j] for _, row in data]) for j in range(width)]
    if sum(c.role == "model" for c in columns) == 1:  # one column "t" or "p" is no model
        columns = [_classify(j, names[j], [row[j] for _, row in data], model=False)
                   for j in range(width)]
    numbers_of = [n for n, _ in data]

    for col in columns:
        _check_extract_terms(col, numbers_of, terms, result)
        _check_record_level_column(col, numbers_of, terms, result)

    _check_counts(columns, numbers_of, rules, result)
    _check_repeated_keys(columns, numbers_of, result)
    _check_recoverable(columns, numbers_of, result)
    _check_no_counts(columns, numbers_of, result)
    _check_model(columns, header, data, rules, result)
    result.magnitude_columns = [c.number for c in columns if c.role == "magnitude"]
    return result


def _classify(j: int, name: str, values: list[str], model: bool = True) -> _Column:
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
    unnamed = name in {f"column {j + 1}", "Unnamed: 0", "index", ""}
    if col.integer and j == 0 and unnamed and present in (
            [float(i) for i in range(len(present))], [float(i + 1) for i in range(len(present))]):
        col.role = "index"
    elif model and _MODEL.match(name.rsplit("/", 1)[-1]):
        col.role = "model"
    elif col.integer and all(x >= 0 for x in present) and not _NON_COUNT.search(name):
        col.role = "count"
    elif col.integer and _KEYISH.search(name):
        col.role = "key"
    elif _DERIVED.search(name):
        col.role = "derived"  # percentages and rates of the counts beside them
    else:
        col.role = "magnitude"
    return col


def _check_extract_terms(col: _Column, rows: list[int], terms: ExtractTerms | None,
                         result: TableResult) -> None:
    if terms is None or not len(terms):
        return
    found: dict[str, list[Place]] = {}
    known: dict[str, str | None] = {}  # cells repeat: each value is looked up once
    for value, row in zip(col.values, rows, strict=True):
        if value and value not in known:
            known[value] = value_category(value, terms)
        if value and (category := known[value]):
            found.setdefault(category, []).append(col.place("extract-term", row))
    for category, places in found.items():
        plural = "s" if len(places) > 1 else ""
        result.add("blocked", result.at(f"{len(places)} {category}{plural} "
                                        "from the extract", places), places)


def _check_record_level_column(col: _Column, rows: list[int], terms: ExtractTerms | None,
                               result: TableResult) -> None:
    present = [(v, r) for v, r, m in zip(col.values, rows, col.markers, strict=True) if not m]
    if not present:
        return
    days = [r for v, r in present if len(v) >= 8 and parse_day(v) is not None]
    if len(days) * 2 > len(present):
        places = [col.place("exact-date", r) for r in days]
        result.add("blocked", result.at(f"{len(days)} exact dates in a column: "
                                        "record-level or disclosive; aggregate to month or "
                                        "year", places), places)
        return
    longs = [r for v, r in present if re.fullmatch(r"-?\d{10,}(\.0+)?", v)]
    if longs:
        places = [col.place("long-number", r) for r in longs]
        many = len(longs) >= 3 and len(longs) * 2 > len(present)
        result.add("blocked" if many else "review", result.at(
            f"{len(longs)} number{'s' if len(longs) > 1 else ''} of 10 or more "
            "digits: identifiers (or encoded values), not quantities", places), places)
    if terms is not None and terms.dates and col.integer:
        ints = [(int(x), r) for x, r in zip(col.numbers, rows, strict=True) if x is not None]
        if epoch := day_number_epoch([n for n, _ in ints], terms.dates):
            places = [col.place("day-number", r) for _, r in ints]
            result.add("blocked", result.at(f"a column of the extract's dates "
                                            f"written as {epoch}", places), places)
            return
    if len(rows) < 5 or col.role in {"count", "index", "derived", "model"} or (
            col.numeric and not _ID_NAME.search(col.name)):
        return
    idlike = [r for v, r in present if _IDLIKE.match(v) or UID_RE.fullmatch(v)]
    values = [v for v, _ in present]
    if len(set(values)) == len(values) == len(rows) and len(idlike) * 5 >= len(values) * 4:
        places = [col.place("record-id", r) for r in idlike]
        result.add("blocked", result.at(f"a distinct id-like value in every row "
                                        f"({len(values)}): record-level data", places), places)


def _check_counts(columns: list[_Column], rows: list[int], rules: OutputRules,
                  result: TableResult) -> None:
    small: list[Place] = []
    zeros: list[Place] = []
    unnamed: list[Place] = []
    for col in columns:
        if col.role not in {"count", "magnitude"} or not col.integer:
            continue
        for x, row in zip(col.numbers, rows, strict=True):
            if x is None:
                continue
            value = int(x)
            if col.role == "magnitude":  # not named as a count: it may be one
                if 0 < value < rules.min_count:
                    unnamed.append(col.place("small-number", row))
                continue
            result.count_cells += 1
            if 0 < value < rules.min_count:
                small.append(col.place("small-count", row))
            elif value == 0:
                zeros.append(col.place("zero-count", row))
    if small:
        result.add("blocked", result.at(f"{len(small)} count"
                                        f"{'s' if len(small) > 1 else ''} below the threshold "
                                        f"of {rules.min_count}", small), small)
    if zeros and rules.zeros != "allow":
        verdict: Verdict = "blocked" if rules.zeros == "block" else "review"
        result.add(verdict, result.at(f"{len(zeros)} zero count"
                                      f"{'s' if len(zeros) > 1 else ''} (a zero may be "
                                      "disclosive)", zeros), zeros)
    if unnamed:
        result.add("review", result.at(f"{len(unnamed)} whole number"
                                       f"{'s' if len(unnamed) > 1 else ''} under the threshold "
                                       f"of {rules.min_count} in a column not named as a count "
                                       "(if they count people, they are too small)", unnamed),
                   unnamed)


def _check_repeated_keys(columns: list[_Column], rows: list[int], result: TableResult) -> None:
    keys = [c for c in columns if c.role == "key"]
    if not keys or len(rows) < 2:
        return
    first_seen: dict[tuple[str, ...], int] = {}
    repeats: list[Place] = []
    for i, row in enumerate(rows):
        key = tuple(c.values[i] for c in keys)
        if not any(key):
            continue
        if key in first_seen:
            repeats.append(Place(rule="repeated-categories", line=row))
        else:
            first_seen[key] = row
    if not repeats:
        return
    numbers = ", ".join(str(c.number) for c in keys)
    text = f"{len(repeats)} {result.unit}s repeat the categories of an earlier one (columns " \
           f"{numbers})"
    if len(repeats) >= max(2, len(rows) // 10):
        result.add("blocked", result.at(text + ": looks like "
                                        "record-level data, not an aggregate table", repeats),
                   repeats)
    else:
        result.add("review", result.at(text, repeats), repeats)


def _check_recoverable(columns: list[_Column], rows: list[int], result: TableResult) -> None:
    counts = [c for c in columns if c.role in {"count", "empty"}]
    totals = [c for c in counts if _TOTAL.match(c.name)]
    inner = [c for c in counts if not _TOTAL.match(c.name)]
    found: list[Place] = []
    if totals and len(inner) > 1:
        for i, row in enumerate(rows):
            suppressed = [c for c in inner if c.markers[i] and c.values[i] != ""]
            if len(suppressed) == 1 and totals[0].numbers[i] is not None:
                found.append(suppressed[0].place("recoverable", row))
    keys = [c for c in columns if c.role == "key"]
    total_rows = [i for i in range(len(rows)) if keys and _TOTAL.match(keys[0].values[i])]
    if total_rows and len(rows) > 2:
        t = total_rows[0]
        for col in inner:
            suppressed = [i for i in range(len(rows))
                          if i != t and col.markers[i] and col.values[i] != ""]
            if len(suppressed) == 1 and col.numbers[t] is not None:
                found.append(col.place("recoverable", rows[suppressed[0]]))
    if found:
        result.add("review", result.at("a single suppressed cell beside a shown "
                                       "total can be recovered by subtraction", found), found)


def _check_no_counts(columns: list[_Column], rows: list[int], result: TableResult) -> None:
    """A table of text and categories only. A short list of distinct words (a README's
    table of files) says nothing of people; many rows, a category shared by several rows
    (records of people who share it) or whole numbers (counts under another name) may."""
    if len(rows) < 2 or any(c.role in {"count", "magnitude", "derived", "model"}
                            for c in columns):
        return
    keys = [c for c in columns if c.role == "key"]
    shared = any(len(set(present)) < len(present) for c in keys
                 if (present := [v for v, m in zip(c.values, c.markers, strict=True) if not m]))
    if len(rows) < NO_COUNT_ROWS and not shared and not any(c.numeric for c in keys):
        return
    places = [Place(rule="no-counts", line=row) for row in rows]
    result.add("review", result.at(f"{len(rows)} {result.unit}s of text and "
                                   "categories with no count: a list, or records, which an "
                                   "automatic check cannot tell apart", places[:1]), places)


def _check_model(columns: list[_Column], header: list[tuple[int, list[str]]],
                 data: list[tuple[int, list[str]]], rules: OutputRules,
                 result: TableResult) -> None:
    """ACRO's rule for a model's coefficients: enough residual degrees of freedom."""
    model = [c for c in columns if c.role == "model"]
    if not model:
        return
    stated: list[float] = []
    for col in columns:  # a column of them ...
        if _DOF.match(col.name.rsplit("/", 1)[-1]):
            stated += [x for x in col.numbers if x is not None]
    for _, row in data:  # ... or a row "df_resid, 236"
        if _DOF.match(row[0]):
            stated += [x for c in row[1:] if (x := as_number(c)) is not None]
    for col in columns:  # what remains beside the coefficients is not a cell's magnitude
        if col.role == "magnitude":
            col.role = "model"
    place = Place(rule="model-dof", line=header[0][0] if header else data[0][0])
    if not stated:
        result.add("review", result.at("a model's coefficients without its "
                                       "residual degrees of freedom (df_resid or nobs)",
                                       [place]), [place])
    elif min(stated) < rules.min_count:
        result.add("blocked", result.at("a model with residual degrees of "
                                        f"freedom under the threshold of {rules.min_count}",
                                        [place]), [place])


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
