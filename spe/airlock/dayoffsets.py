"""The extract's dates written as day numbers: days since 1970-01-01 (Unix), Python's
`date.toordinal()`, spreadsheet serials (days since 1899-12-30), Modified and plain Julian
day numbers.

One number that falls on a date of the extract says nothing: an extract's dates can cover
most days of a decade. Many numbers that all fall on the extract's dates, where the dates
are sparse, are the dates: `day_number_epoch` asks that at least `MIN_HITS` numbers, and
`SHARE` of them, be days of the extract under one counting, and that this be far more than
the density of the extract's dates over the numbers' range would give by chance.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

MIN_HITS = 8
SHARE = 0.8
_CHANCE_FACTOR = 3  # hits must be this many times what the density alone would give

EPOCHS: dict[str, int] = {  # name -> the number of 0001-01-01's ordinal minus the epoch
    "days since 1970-01-01": -date(1970, 1, 1).toordinal(),
    "day ordinals": 0,
    "spreadsheet serial days": -date(1899, 12, 30).toordinal(),
    "modified Julian days": -date(1858, 11, 17).toordinal(),
    "Julian day numbers": 1_721_425,
}


def day_numbers(epoch: str, dates: frozenset[date]) -> set[int]:
    """The extract's days as numbers under `epoch`."""
    return {d.toordinal() + EPOCHS[epoch] for d in dates}


def day_number_epoch(numbers: Iterable[int], dates: frozenset[date]) -> str | None:
    """The counting under which `numbers` are the extract's days, if they clearly are."""
    values = [n for n in numbers if isinstance(n, int)]
    if len(values) < MIN_HITS or not dates:
        return None
    for name in EPOCHS:
        days = day_numbers(name, dates)
        hits = sum(v in days for v in values)
        if hits < MIN_HITS or hits < SHARE * len(values):
            continue
        low, high = min(values), max(values)
        density = sum(low <= d <= high for d in days) / (high - low + 1)
        if hits >= _CHANCE_FACTOR * density * len(values):
            return name
    return None
