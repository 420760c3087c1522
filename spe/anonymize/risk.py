"""Layer 3: re-identification risk over quasi-identifiers, measured and reduced.

A record is a dict of quasi-identifier values (see `spe.anonymize.extract` for the shape an
extract gives): `age` in whole years, `sex`, `region` as "<country>:<postal code>" (e.g.
"ES:28029"), and `codes`, the patient's ICD-10 codes. The quasi-identifier taken from `codes`
is not the whole list but its rare part: the sorted tuple of the record's codes held by fewer
than `rare_below` patients of the same extract, since a common diagnosis singles nobody out.
Rarity is judged once, on the records given, before any suppression.

Measures follow the prosecutor model (the attacker knows their target is in the extract):
records sharing every quasi-identifier value form an equivalence class, and a record's risk
is 1/|class|. `k` is the smallest class.

`reduce` is Datafly (Sweeney 1998): while too many records sit in classes smaller than
`k_min`, generalise the quasi-identifier with the most distinct values by one level of its
hierarchy; then suppress (drop) the records still in too-small classes. Ties go to the
earlier quasi-identifier in `qis`, so the result is deterministic.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

STAR = "*"
DEFAULT_QIS = ("age", "sex", "region", "codes")
RARE_BELOW = 5

Level = Callable[[Any], Any]


def _keep(value: Any) -> Any:
    return STAR if value is None else value


def _star(_value: Any) -> str:
    return STAR


def _age_band(width: int) -> Level:
    def band(value: Any) -> Any:
        if value is None or value == STAR:
            return STAR
        if isinstance(value, str) and "-" in value:
            # An extract already generalised ("40-59", as risk_apply writes it): the band
            # of this width holding it, or the band itself when it is wider already (the
            # widths nest, so bands never straddle).
            first, _, last = value.partition("-")
            low = int(first) // width * width
            return f"{low}-{low + width - 1}" if int(last) < low + width else value
        low = int(value) // width * width
        return f"{low}-{low + width - 1}"
    return band


def _split_region(value: str) -> tuple[str, str]:
    country, sep, postal = value.partition(":")
    return (country, postal) if sep else (value, "")


def _region_prefix(chars: int) -> Level:
    def prefix(value: Any) -> Any:
        if value is None:
            return STAR
        country, postal = _split_region(str(value))
        return f"{country}:{postal[:chars]}" if postal else (country or STAR)
    return prefix


def _region_country(value: Any) -> Any:
    if value is None:
        return STAR
    return _split_region(str(value))[0] or STAR


def icd10_category(code: str) -> str:
    """The ICD-10 three-character category ("C71.9" -> "C71"), which stands in for the
    SNOMED CT parent: walking SNOMED's hierarchy needs a terminology server this SPE lacks."""
    return code.split(".")[0][:3]


def _codes_exact(value: Any) -> Any:
    return tuple(value or ())


def _codes_category(value: Any) -> Any:
    return tuple(sorted({icd10_category(c) for c in value or ()}))


@dataclass(frozen=True)
class Hierarchy:
    """Generalisation levels of one quasi-identifier; level 0 is the value, the last `*`.
    Each level maps the original value, not the previous level's output."""

    name: str
    levels: tuple[Level, ...]

    @property
    def top(self) -> int:
        return len(self.levels) - 1

    def generalise(self, value: Any, level: int) -> Any:
        return self.levels[min(level, self.top)](value)


HIERARCHIES: dict[str, Hierarchy] = {
    "age": Hierarchy("age", (_keep, _age_band(5), _age_band(10), _age_band(20), _star)),
    "sex": Hierarchy("sex", (_keep, _star)),
    "region": Hierarchy("region", (_keep, _region_prefix(3), _region_prefix(2),
                                   _region_prefix(1), _region_country, _star)),
    # Applied to the record's rare codes only (see `rare_codes`).
    "codes": Hierarchy("codes", (_codes_exact, _codes_category, _star)),
}


def rare_code_set(records: Iterable[dict[str, Any]], rare_below: int = RARE_BELOW) -> set[str]:
    """Codes held by fewer than `rare_below` records (each record counted once per code)."""
    held = Counter(code for r in records for code in set(r.get("codes") or ()))
    return {code for code, n in held.items() if n < rare_below}


def rare_codes(record: dict[str, Any], rare: set[str]) -> tuple[str, ...]:
    return tuple(sorted({c for c in record.get("codes") or () if c in rare}))


@dataclass
class RiskReport:
    records: int
    suppressed: int
    k: int
    max_risk: float
    average_risk: float
    at_risk: int
    threshold: float
    classes: int
    qis: list[str]
    distinct: dict[str, int]
    levels: dict[str, int]
    k_min: int | None = None
    before: RiskReport | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["before"] = self.before.to_dict() if self.before else None
        return out


@dataclass(frozen=True)
class Step:
    qi: str
    level: int
    distinct_before: int
    distinct_after: int
    too_small_after: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Table:
    """The quasi-identifier tuples of an extract at given levels."""

    records: list[dict[str, Any]]
    qis: tuple[str, ...]
    rare: set[str]
    hierarchies: dict[str, Hierarchy]
    levels: dict[str, int] = field(default_factory=dict)

    def value(self, record: dict[str, Any], qi: str) -> Any:
        raw = rare_codes(record, self.rare) if qi == "codes" else record.get(qi)
        return self.hierarchies[qi].generalise(raw, self.levels.get(qi, 0))

    def keys(self) -> list[tuple[Any, ...]]:
        return [tuple(self.value(r, qi) for qi in self.qis) for r in self.records]


def _report(keys: Sequence[tuple[Any, ...]], qis: Sequence[str], levels: dict[str, int], *,
            threshold: float, suppressed: int = 0, k_min: int | None = None) -> RiskReport:
    sizes = Counter(keys)
    n = len(keys)
    risks = [1 / sizes[key] for key in keys]
    return RiskReport(
        records=n,
        suppressed=suppressed,
        k=min(sizes.values()) if sizes else 0,
        max_risk=max(risks) if risks else 0.0,
        # Sum of 1/|class| over a class's members is 1, hence classes / records.
        average_risk=len(sizes) / n if n else 0.0,
        at_risk=sum(1 for r in risks if r > threshold),
        threshold=threshold,
        classes=len(sizes),
        qis=list(qis),
        distinct={qi: len({key[i] for key in keys}) for i, qi in enumerate(qis)},
        levels={qi: levels.get(qi, 0) for qi in qis},
        k_min=k_min,
    )


def measure(records: Sequence[dict[str, Any]], *, qis: Sequence[str] = DEFAULT_QIS,
            threshold: float = 0.2, rare_below: int = RARE_BELOW,
            levels: dict[str, int] | None = None,
            hierarchies: dict[str, Hierarchy] | None = None) -> RiskReport:
    """Risk of `records` as they are (or at `levels`); `at_risk` counts risk > `threshold`."""
    table = _Table(list(records), tuple(qis), rare_code_set(records, rare_below),
                   hierarchies or HIERARCHIES, dict(levels or {}))
    return _report(table.keys(), qis, table.levels, threshold=threshold)


def k_for(k_min: int | None = None, max_risk: float | None = None) -> int:
    """The class size a threshold asks for; both given, the stricter."""
    if k_min is None and max_risk is None:
        raise ValueError("give k_min or max_risk")
    if max_risk is not None and not 0 < max_risk <= 1:
        raise ValueError("max_risk must be in (0, 1]")
    if k_min is not None and k_min < 1:
        raise ValueError("k_min must be at least 1")
    # The epsilon keeps float noise (1/0.2 == 5.000000001) from asking for one more record.
    from_risk = math.ceil(1 / max_risk - 1e-9) if max_risk is not None else 1
    return max(k_min or 1, from_risk)


def reduce(records: Sequence[dict[str, Any]], k_min: int | None = None,
           max_risk: float | None = None, max_suppression: float = 0.05, *,
           qis: Sequence[str] = DEFAULT_QIS, rare_below: int = RARE_BELOW,
           hierarchies: dict[str, Hierarchy] | None = None,
           weights: dict[str, float] | None = None,
           ) -> tuple[list[dict[str, Any]], RiskReport, list[Step]]:
    """Generalise, then suppress, until every class has at least k_min records.

    `weights` (default 1 each) scale each quasi-identifier's count of distinct values when
    choosing the next to generalise: a weight under 1 keeps a quasi-identifier the study
    needs (age, say) detailed longer, as attribute weights do in ARX.

    Returns the surviving records with their quasi-identifiers generalised, the report after
    (with `before`), and the generalisation steps in order.
    """
    k = k_for(k_min, max_risk)
    threshold = max_risk if max_risk is not None else 1 / k
    qis = tuple(qis)
    hierarchies = hierarchies or HIERARCHIES
    table = _Table(list(records), qis, rare_code_set(records, rare_below), hierarchies,
                   {qi: 0 for qi in qis})
    n = len(table.records)
    keys = table.keys()
    before = _report(keys, qis, table.levels, threshold=threshold, k_min=k)
    budget = max_suppression * n
    steps: list[Step] = []

    def too_small(keys: list[tuple[Any, ...]]) -> int:
        sizes = Counter(keys)
        return sum(1 for key in keys if sizes[key] < k)

    while too_small(keys) > budget:
        distinct = {qi: len({key[i] for key in keys}) for i, qi in enumerate(qis)}
        open_qis = [qi for qi in qis if table.levels[qi] < hierarchies[qi].top]
        if not open_qis:
            break  # all at `*`: only suppression is left, whatever it costs
        # max keeps the first of equals
        qi = max(open_qis, key=lambda q: distinct[q] * (weights or {}).get(q, 1.0))
        table.levels[qi] += 1
        keys = table.keys()
        after = len({key[qis.index(qi)] for key in keys})
        steps.append(Step(qi, table.levels[qi], distinct[qi], after, too_small(keys)))

    sizes = Counter(keys)
    kept = [i for i, key in enumerate(keys) if sizes[key] >= k]
    report = _report([keys[i] for i in kept], qis, table.levels, threshold=threshold,
                     suppressed=n - len(kept), k_min=k)
    report.before = before
    out = [_generalised(table, table.records[i]) for i in kept]
    return out, report, steps


def _generalised(table: _Table, record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    for qi in table.qis:
        if qi != "codes":
            out[qi] = table.value(record, qi)
            continue
        # Common codes stay as they are; only the rare ones are generalised, and at `*`
        # dropped, so the released list says no more than the measured value.
        common = [c for c in record.get("codes") or () if c not in table.rare]
        general = table.value(record, qi)
        out[qi] = tuple(sorted(set(common) | (set() if general == STAR else set(general))))
    return out
