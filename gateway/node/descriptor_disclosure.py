"""Disclosure control of the public dataset descriptor: counts that cannot be subtracted,
ranges whose ends are not individuals.

**Breakdowns: complementary suppression.** Series per modality (body part, manufacturer)
add up to the published number of series, with the series that carry no value making up
the rest. So a count suppressed alone is the total minus the shown counts, and the series
with no value are that difference too. Every count below the threshold is hidden, and then
the smallest shown counts as well, until the hidden part of the total (hidden counts plus
the series with no value: what the total minus the shown counts gives anyone) holds at
least the threshold and no hidden small count can be pinned to one value by a reader who
knows this rule: that small counts are 1..k-1, that a complement was the smallest count
left, and perhaps how many series carry no value (a modality always has one). Totals stay
published: they are the catalogue's headline figures and a total of one breakdown is the
sum of another, so hiding a total would have to hide every other breakdown with it.

Why suppression and not rounding: the descriptor rule of `policies/disclosure` is exact
(rounding 1) because the catalogue is read for feasibility; rounded parts beside a rounded
total still bound a hidden count to a few values at small totals, while complements leave
every hidden small count more than one value, as the tests check exhaustively.

**Ranges: trimmed inward.** The youngest and oldest age and the first and last study day
are each one person. Published instead: the age at or below which at least k patients lie,
rounded up to a multiple of `AGE_STEP` years, and the age at or above which at least k lie,
rounded down; the first day of a month on or before which at least k patients had a study,
and the last day of a month on or after which at least k had one. Rounding inward keeps at
least k patients at or beyond each published end.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import TypeVar

from spe.wire.descriptors import AGE_STEP, exposed

T = TypeVar("T", int, date)


def _pinned(counts: Mapping[str, int], hidden: set[str], unrecorded: int, k: int) -> bool:
    """Whether a reader who knows the rule could still pin a small count to one value: a
    hidden count below k (even knowing how many members carry no value, as with a
    modality, which DICOM requires), or the members with no value when they are 1 to k-1.

    The reader's bounds: a count below k is 1..k-1; a complement is at least k and, being
    the smallest count left when it was chosen (ties by value), at most what no shown
    count sorts before."""
    small = {v for v in hidden if counts[v] < k}
    shown = [(n, x) for x, n in counts.items() if x not in hidden]
    group = sum(counts[v] for v in hidden)
    lo = {v: 1 if v in small else k for v in hidden}
    hi = {v: k - 1 if v in small else min((n if v < x else n - 1 for n, x in shown),
                                          default=group + unrecorded) for v in hidden}
    for v in small:
        others = [w for w in hidden if w != v]
        if max(1, group - sum(hi[w] for w in others)) >= min(
                k - 1, group - sum(lo[w] for w in others)):
            return True
    if 0 < unrecorded < k:
        rest = group + unrecorded
        # With no small count hidden, the members with no value are why anything is.
        least, most = (0, rest) if small else (1, k - 1)
        return max(least, rest - sum(hi.values())) >= min(most, rest - sum(lo.values()))
    return False


def hidden_cells(counts: Mapping[str, int], unrecorded: int, threshold: int) -> set[str]:
    """The values of one breakdown whose counts are suppressed: those below the threshold,
    then the smallest others (ties by value) until the hidden part is neither a small group
    nor pinned to one value for a reader who knows this rule.

    `counts`: the count (at least 1) of each value present; `unrecorded`: members of the
    total that carry no value, never listed and so always part of the hidden remainder."""
    hidden = {v for v, n in counts.items() if n < threshold}
    spare = sorted((n, v) for v, n in counts.items() if v not in hidden)
    total = unrecorded + sum(counts[v] for v in hidden)
    while spare and (exposed(total, len(hidden), threshold)
                     or _pinned(counts, hidden, unrecorded, threshold)):
        n, v = spare.pop(0)
        hidden.add(v)
        total += n
    return hidden


def values_give_counts_away(counts: Mapping[str, int], unrecorded: int, hidden: set[str],
                            threshold: int) -> bool:
    """Whether the listed values alone would pin their counts: with the total published,
    a remainder still exposed (every value one series, nothing else to hide); with it
    suppressed (fewer than the threshold), so many values that each can only be 1."""
    if unrecorded + sum(counts.values()) < threshold:
        return len(counts) >= threshold - 1 > 0
    rest = unrecorded + sum(counts[v] for v in hidden)
    return exposed(rest, len(hidden), threshold) or _pinned(counts, hidden, unrecorded,
                                                            threshold)


def share_hidden(part: int, whole: int, threshold: int) -> bool:
    """A share part/whole with its whole published: hidden when either side is small."""
    sides = {"with": part, "without": whole - part}
    return bool(hidden_cells({side: n for side, n in sides.items() if n}, 0, threshold))


def at_least_k_from_below(values: Sequence[T], k: int) -> T | None:
    """The smallest value with at least k values at or below it (None if fewer than k)."""
    return sorted(values)[k - 1] if k >= 1 and len(values) >= k else None


def at_least_k_from_above(values: Sequence[T], k: int) -> T | None:
    """The largest value with at least k values at or above it (None if fewer than k)."""
    return sorted(values, reverse=True)[k - 1] if k >= 1 and len(values) >= k else None


def age_range(youngest: Sequence[int], oldest: Sequence[int], k: int) -> tuple[int, int] | None:
    """(low, high) from each patient's youngest and oldest age at a study, trimmed so that
    at least k patients are at or below low and at or above high, in whole `AGE_STEP`s."""
    low, high = at_least_k_from_below(youngest, k), at_least_k_from_above(oldest, k)
    if low is None or high is None:
        return None
    low, high = -(-low // AGE_STEP) * AGE_STEP, high // AGE_STEP * AGE_STEP
    return (low, high) if low <= high else None


def _month_start_on_or_after(d: date) -> date:
    if d.day == 1:
        return d
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


def _month_end_on_or_before(d: date) -> date:
    if d.day == calendar.monthrange(d.year, d.month)[1]:
        return d
    return d.replace(day=1) - timedelta(days=1)


def date_range(first: Sequence[date], last: Sequence[date], k: int) -> tuple[date, date] | None:
    """(start, end) from each patient's first and last study day, trimmed so that at least
    k patients had a study on or before start and on or after end, in whole months."""
    start, end = at_least_k_from_below(first, k), at_least_k_from_above(last, k)
    if start is None or end is None:
        return None
    start, end = _month_start_on_or_after(start), _month_end_on_or_before(end)
    return (start, end) if start <= end else None


__all__ = ["age_range", "date_range", "hidden_cells", "share_hidden",
           "values_give_counts_away"]
