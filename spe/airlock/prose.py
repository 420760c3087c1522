"""Counts and records written as prose: plain text, Markdown around its tables, the strings
of a JSON file.

Counts: a number (in digits, or in words up to twenty: "two patients", "a single case")
next to a word for people ("3 women", "two patients"), after "n =", as the first of "3 of
120", or after a phrase about people and a colon ("patients with glioma: 3"). A count under
the threshold blocks, a zero follows `OutputRules.zeros`; a number before a verb ("3 had a
glioma") is less certain and goes to review.

Records: lines written to one pattern (the same words, numbers and punctuation in the same
order once the words and numbers themselves are set aside) are a table in text. Ten or
more of them, where words differ from line to line ("Patient 12: female, 54, seen in
2019-W10"), are records in prose: review. Where only numbers differ after a label ("CT  25",
"age  0.023  0.005  4.6"), the lines are read as a table and checked as one (tables.py);
the coefficients of a model summary count as a model's, with its stated observations or
residual degrees of freedom. Lines whose words are all the same ("epoch 3 loss 0.41") are
a computation's log and are left to the other checks.
"""

from __future__ import annotations

import re
from collections import defaultdict

from spe.airlock.lines import Lines
from spe.airlock.report import Place, Verdict, where
from spe.airlock.rules import OutputRules

RECORD_LINES = 10  # lines of one pattern that make a table in text

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS |= {"no": 0, "none": 0, "single": 1, "a single": 1, "only one": 1,
                  "a couple of": 2, "a pair of": 2}
_NUM = (r"(?<![\w.,/-])(\d+|" + "|".join(sorted((re.escape(w) for w in _NUMBER_WORDS),
                                                  key=len, reverse=True)) + r")(?![\w]|[.,/]\d)")
_PEOPLE = (r"(?:patients?|persons?|people|individuals?|subjects?|participants?|cases?|"
           r"women|men|woman|man|females?|males?|girls?|boys?|children|child|adults?|"
           r"infants?|babies|baby|residents?|deaths?|admissions?|records?|respondents?|"
           r"controls?|pregnancies|mothers?|survivors?|decedents?)")
_UNITS = re.compile(r"\b(years?|yrs?|months?|weeks?|days?|hours?|minutes?|mg|kg|g|cm|mm|ml|"
                    r"times|doses?|visits?|%|percent)\b", re.IGNORECASE)
_LABELS = re.compile(r"(figure|fig|table|section|step|version|model|panel|appendix|chapter|"
                     r"line|column|row|page|item|group|site|week|day|phase|arm|level|"
                     r"stage|grade|type|wave|round|fold|run)\.?\s*$", re.IGNORECASE)

_COUNT_PATTERNS: list[tuple[re.Pattern[str], Verdict]] = [
    # "3 patients", "two elderly women"
    (re.compile(_NUM + r"((?:[ \t]+[A-Za-z-]+){0,2}?)[ \t]+" + _PEOPLE + r"\b", re.IGNORECASE),
     "blocked"),
    # "n = 3", "(N: 3)"
    (re.compile(r"(?<![\w])n\s*[=:]\s*(\d+)()(?![\d.])", re.IGNORECASE), "blocked"),
    # "3 of 120", "two out of 40"
    (re.compile(_NUM + r"()\s+(?:of|out of)\s+(?:the\s+)?\d{2,}", re.IGNORECASE), "blocked"),
    # "patients with a glioma: 3"
    (re.compile(r"\b" + _PEOPLE + r"\b[^.\n:=]{0,60}[:=]\s*" + _NUM + r"()(?!\s*%)",
                re.IGNORECASE), "review"),
    # "3 had a glioma"
    (re.compile(_NUM + r"()\s+(?:had|have|has|were|was|died|received|underwent|developed|"
                       r"presented|showed|remained)\b", re.IGNORECASE), "review"),
]
_TOKEN = re.compile(r"[A-Za-z]+|(?<![\w])[-+]?\d+(?:[.,:/-]\d+)*|[^\sA-Za-z\d]")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_JOINERS = {"(", ")", "-", "/", "'", "&"}
_DOF_STATED = re.compile(r"(?:no\.?\s*observations|df\s*residuals?|df_resid|nobs|n_obs)"
                         r"\D{0,20}?(\d+)|(\d+)\s+degrees\s+of\s+freedom", re.IGNORECASE)


def _value(text: str) -> int | None:
    text = " ".join(text.lower().split())
    if text.isdigit():
        return int(text)
    return _NUMBER_WORDS.get(text)


def prose_counts(text: str, rules: OutputRules) -> list[tuple[Verdict, str, list[Place]]]:
    """Counts under the threshold written in words or digits beside words for people."""
    found: dict[int, tuple[Verdict, Place]] = {}
    lines = Lines(text)
    for pattern, verdict in _COUNT_PATTERNS:
        for match in pattern.finditer(text):
            value = _value(match.group(1))
            between = match.group(2) or ""
            if value is None or value >= rules.min_count or _UNITS.search(between):
                continue
            before = text[max(0, match.start() - 20):match.start()]
            if _LABELS.search(before):  # "Figure 1 was", "group 3 had"
                continue
            if value == 0 and rules.zeros == "allow":
                continue
            rule = "zero-count" if value == 0 else "small-count"
            level: Verdict = verdict if value else (
                "blocked" if rules.zeros == "block" else "review")
            start = match.start(1) if match.group(1) else match.start()
            line = lines.at(start)
            earlier = found.get(start)
            if earlier is None or (earlier[0] == "review" and level == "blocked"):
                found[start] = (level, Place(rule=rule, line=line))
    out: list[tuple[Verdict, str, list[Place]]] = []
    for level in ("blocked", "review"):
        for rule, words in (("small-count", f"under the threshold of {rules.min_count}"),
                            ("zero-count", "of zero (a zero may be disclosive)")):
            places = sorted((p for v, p in found.values() if v == level and p.rule == rule),
                            key=lambda p: p.line or 0)
            if places:
                plural = "s" if len(places) > 1 else ""
                sure = "" if level == "blocked" else " (perhaps)"
                out.append((level, f"{len(places)} count{plural} {words} written in "
                                   f"prose{sure}: {where(places)}", places))
    return out


def line_shape(line: str) -> tuple[str, ...] | None:
    tokens = _TOKEN.findall(line)
    if not any(t[-1].isdigit() for t in tokens) or (len(tokens) < 2 and not tokens[0][-1]
                                                     .isdigit()):
        return None
    shape: list[str] = []
    for token in tokens:
        kind = "w" if token[0].isalpha() else "#" if token[-1].isdigit() else token
        if kind == "w" and shape and (shape[-1] == "w" or shape[-1] in _JOINERS):
            while shape and shape[-1] in _JOINERS:
                shape.pop()
            if shape and shape[-1] == "w":
                continue
        shape.append(kind)
    return tuple(shape)


def text_tables(text: str) -> list[tuple[str, list[tuple[int, list[str]]]]]:
    """Groups of at least RECORD_LINES lines written to one pattern: ("records", lines) if
    their words differ, ("table", rows of label and numbers) if only numbers do."""
    groups: dict[tuple[str, ...], list[tuple[int, str]]] = defaultdict(list)
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if stripped.startswith("|"):
            continue  # Markdown tables are read as tables
        if shape := line_shape(stripped):
            groups[shape].append((number, stripped))
    out: list[tuple[str, list[tuple[int, list[str]]]]] = []
    for shape, lines in groups.items():
        if len(lines) < RECORD_LINES:
            continue
        if all(k == "#" for k in shape):  # numbers only: a column of values, or several
            out.append(("table", [(n, line.split()) for n, line in lines]))
            continue
        words = {tuple(w.lower() for w in _WORD.findall(line)) for _, line in lines}
        if len(words) == 1:
            continue  # the same words, numbers differing: a log of a computation
        if shape[0] == "w" and all(k == "#" for k in shape[1:]):
            rows = []
            for number, line in lines:
                numbers = re.findall(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", line)
                label = re.split(r"\s+-?\d", line, maxsplit=1)[0].strip()
                rows.append((number, [label, *numbers[-(len(shape) - 1):]]))
            out.append(("table", rows))
        else:
            out.append(("records", [(n, [line]) for n, line in lines]))
    return out


def stated_dof(text: str) -> list[int]:
    """Observations or residual degrees of freedom a model summary states."""
    return [int(a or b) for a, b in _DOF_STATED.findall(text)]
