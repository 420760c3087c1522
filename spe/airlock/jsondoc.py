"""Disclosure control of a JSON output, whatever its shape.

- FHIR resources with their `resourceType` stripped are still FHIR: objects with several of
  FHIR's element names (subject, effectiveDateTime, valueQuantity, coding, ...) are records
  of the extract: blocked.
- Records: every list of objects (and every object of objects, keyed by an id) anywhere in
  the document is flattened (nested keys joined with dots) and checked as a table
  (tables.py): repeated categories, ids, dates, small counts in any column.
- Every other number is a cell: a whole number under a key not named like something else
  (age, year, mean, p, ...) is a count, checked against the threshold wherever it sits
  (`{"female": 4}`, `{"by_site": {"a": {"n": 3}}}`, `[12, 3, 40]`); means, sums, minima and
  maxima are magnitudes (review, as in tables).

Places are the lines of the numbers in the file (JSON's numbers are found in the text in
the order the parser meets them); reasons never quote a key (the job chose them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from spe.airlock.lines import Lines
from spe.airlock.report import Place, Verdict, where
from spe.airlock.rules import OutputRules
from spe.airlock.tables import _NON_COUNT, TableResult, check_table
from spe.airlock.terms import ExtractTerms

MAX_DEPTH = 64
FHIR_ELEMENTS = frozenset(
    "subject patient encounter status category code coding system display reference "
    "effectiveDateTime effectivePeriod effectiveInstant issued valueQuantity "
    "valueCodeableConcept valueString valueBoolean valueInteger valueDateTime component "
    "interpretation referenceRange onsetDateTime onsetAge abatementDateTime recordedDate "
    "clinicalStatus verificationStatus performedDateTime performedPeriod bodySite "
    "birthDate deceasedBoolean deceasedDateTime gender identifier meta extension "
    "started series modality numberOfSeries numberOfInstances procedureCode instance "
    "sopClass authoredOn medicationCodeableConcept dosageInstruction period".split())
FHIR_MIN_ELEMENTS = 3  # besides the generic ones a code list has (system, code, display)
_GENERIC = frozenset({"system", "code", "display", "coding", "reference", "status"})
_MAGNITUDE = re.compile(r"(^|[\s_\-.])(mean|avg|average|sum|total_value|median|sd|std|var|"
                        r"variance|min|max|minimum|maximum|range)($|[\s_\-.])", re.IGNORECASE)
_NUMBER_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)')


@dataclass
class JsonResult:
    flags: list[tuple[Verdict, str, list[Place]]] = field(default_factory=list)
    tables: list[TableResult] = field(default_factory=list)
    magnitudes: list[Place] = field(default_factory=list)


def _number_lines(text: str) -> list[int]:
    lines = Lines(text)
    return [lines.at(m.start()) for m in _NUMBER_TOKEN.finditer(text) if m.group(1) is not None]


def _fhir_like(node: Any) -> bool:
    return isinstance(node, dict) and len(
        (FHIR_ELEMENTS - _GENERIC).intersection(node)) >= FHIR_MIN_ELEMENTS


def _flatten(node: Any, prefix: str = "", depth: int = 0) -> dict[str, str]:
    out: dict[str, str] = {}
    if depth > MAX_DEPTH:
        return out
    if isinstance(node, dict):
        for key, value in node.items():
            out |= _flatten(value, f"{prefix}.{key}" if prefix else str(key), depth + 1)
    elif isinstance(node, list):
        if all(not isinstance(v, dict | list) for v in node):
            out[prefix] = ";".join("" if v is None else str(v) for v in node)
        else:
            for i, value in enumerate(node):
                out |= _flatten(value, f"{prefix}.{i}", depth + 1)
    else:
        out[prefix] = "" if node is None else str(node)
    return out


def _record_sets(node: Any, depth: int = 0
                 ) -> Iterator[tuple[list[dict[str, Any]], list[Any]]]:
    """Lists of objects, and objects whose values are all objects (keyed records): (the
    records, the objects of the document they come from)."""
    if depth > MAX_DEPTH:
        return
    if isinstance(node, list):
        items = [v for v in node if isinstance(v, dict)]
        if len(items) >= 2 and len(items) == len(node):
            yield items, items
            return
        for value in node:
            yield from _record_sets(value, depth + 1)
    elif isinstance(node, dict):
        values = list(node.values())
        if len(values) >= 2 and all(isinstance(v, dict) for v in values) and len(
                {frozenset(v) for v in values}) == 1 and len(values[0]) >= 2:
            yield [{"key": k, **v} for k, v in node.items()], values
            return
        for value in values:
            yield from _record_sets(value, depth + 1)


def _in_records(node: Any) -> set[int]:
    """ids of every object inside a record set (their numbers are checked as tables); the
    document holds them all, so no id is reused while the set is in use."""
    inside: set[int] = set()
    for _, originals in _record_sets(node):
        stack: list[Any] = list(originals)
        while stack:
            item = stack.pop()
            inside.add(id(item))
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return inside


def _leaves(node: Any, key: str, skip: set[int], depth: int = 0
            ) -> Iterator[tuple[str, Any, bool]]:
    """(the nearest key, the number, whether it lies inside a record set), document order."""
    if depth > MAX_DEPTH:
        return
    inside = id(node) in skip
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, dict | list):
                yield from _leaves(v, str(k), skip, depth + 1)
            elif isinstance(v, int | float) and not isinstance(v, bool):
                yield str(k), v, inside
    elif isinstance(node, list):
        for v in node:
            if isinstance(v, dict | list):
                yield from _leaves(v, key, skip, depth + 1)
            elif isinstance(v, int | float) and not isinstance(v, bool):
                yield key, v, inside


def check_json(data: Any, text: str, rules: OutputRules,
               terms: ExtractTerms | None) -> JsonResult:
    result = JsonResult()
    fhir = _count_fhir(data)
    if fhir >= 2:
        place = Place(rule="fhir-records", line=1)
        result.flags.append(("blocked", f"{fhir} objects shaped like FHIR resources (their "
                                        "element names) without resourceType: record-level "
                                        "data of the extract", [place]))
    for records, _ in _record_sets(data):
        flat = [_flatten(r) for r in records]
        keys = list(dict.fromkeys(k for r in flat for k in r))
        rows = [keys] + [[r.get(k, "") for k in keys] for r in flat]
        result.tables.append(check_table(rows, rules, terms, row_numbers=range(len(rows)),
                                         unit="record"))
    lines = _number_lines(text)
    skip = _in_records(data)
    small: list[Place] = []
    zeros: list[Place] = []
    leaves = list(_leaves(data, "", skip))
    aligned = len(leaves) == len(lines)
    for i, (key, value, inside) in enumerate(leaves):
        if inside:
            continue
        line = lines[i] if aligned else None
        if _MAGNITUDE.search(key):
            result.magnitudes.append(Place(rule="magnitude", line=line))
            continue
        if isinstance(value, float) or _NON_COUNT.search(key):
            continue
        if 0 < value < rules.min_count:
            small.append(Place(rule="small-count", line=line))
        elif value == 0:
            zeros.append(Place(rule="zero-count", line=line))
    if small:
        result.flags.append(("blocked", f"{len(small)} count{'s' if len(small) > 1 else ''} "
                                        f"below the threshold of {rules.min_count}: "
                                        f"{where(small)}", small))
    if zeros and rules.zeros != "allow":
        verdict: Verdict = "blocked" if rules.zeros == "block" else "review"
        result.flags.append((verdict, f"{len(zeros)} zero count{'s' if len(zeros) > 1 else ''}"
                                      f" (a zero may be disclosive): {where(zeros)}", zeros))
    return result


def _count_fhir(node: Any, depth: int = 0) -> int:
    if depth > MAX_DEPTH:
        return 0
    if isinstance(node, dict):
        own = 1 if _fhir_like(node) else 0
        return own + sum(_count_fhir(v, depth + 1) for v in node.values())
    if isinstance(node, list):
        return sum(_count_fhir(v, depth + 1) for v in node)
    return 0
