"""Complementary suppression and trimmed ranges of the node's descriptor, checked against
an attacker who knows the rule: for every breakdown the attacker could see, every hidden
count must still have more than one possible value."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, date, datetime

import pytest

from gateway.node.descriptor_disclosure import age_range, date_range, hidden_cells, share_hidden
from spe.wire.descriptors import (
    SHARE_DIGITS,
    Completeness,
    DatasetDescriptor,
    disclosure_problems,
)

K = 10
TOP = 20  # counts 1..TOP per value, series with no value 0..TOP


def published(counts: dict[str, int], unrecorded: int) -> tuple:
    """What a reader sees of one breakdown: the values, the shown counts, the total (itself
    suppressed below the threshold, as the descriptor's number of series is)."""
    hidden = hidden_cells(counts, unrecorded, K)
    cells = tuple((v, None if v in hidden else n) for v, n in sorted(counts.items()))
    total = sum(counts.values()) + unrecorded
    return cells, total if total >= K else None


def possible_values(values: int, top: int, unrecorded: range) -> dict:
    """What a reader who knows the rule still thinks possible, per published breakdown:
    every breakdown of `values` values with counts 0..top (0: absent) and `unrecorded`
    series with no value, grouped by what it publishes."""
    possible: dict[tuple, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for ns in itertools.product(range(top + 1), repeat=values):
        counts = {v: n for v, n in zip("ABCD", ns, strict=False) if n}
        for u in unrecorded:
            view = published(counts, u)
            for v, n in counts.items():
                possible[view][v].add(n)
    return possible


@pytest.mark.parametrize(("values", "top", "unrecorded"), [
    (3, TOP, range(TOP + 1)),  # the series with no value unknown to the reader
    (3, 2 * TOP, range(1)),  # known to be none (a modality: DICOM requires one)
    (4, 12, range(1)),
])
def test_no_hidden_count_has_a_single_possible_value_for_one_who_knows_the_rule(
    values, top, unrecorded
):
    judged = 0
    for (cells, total), possible in possible_values(values, top, unrecorded).items():
        hidden = [v for v, n in cells if n is None]
        if total is None:  # every count below K, so every alternative is enumerated
            assert all(n is None for _, n in cells)
        else:
            rest = total - sum(n for _, n in cells if n is not None)
            # Judged only where every alternative is inside the enumerated range.
            if not hidden and not rest or rest > top:
                continue
            assert rest == 0 or rest >= K, (cells, total)  # the hidden part: no small group
        judged += 1
        for v in hidden:
            assert len(possible[v]) > 1, (cells, total, v, possible[v])
    assert judged > 300


@pytest.mark.parametrize(("counts", "unrecorded", "hidden"), [
    ({"MR": 329, "CT": 141, "MG": 22, "PT": 6}, 0, {"PT", "MG"}),  # PT's complement: MG
    ({"Philips": 949, "GE": 6}, 0, {"Philips", "GE"}),  # two values: both or neither
    # 12 series with no value would hide it, unless the reader knows there are 12
    ({"MR": 50, "PT": 3}, 12, {"PT", "MR"}),
    ({"MR": 50, "CT": 40}, 4, {"CT"}),  # 4 series with no value are a small group too
    ({"MR": 50, "CT": 40}, 0, set()),
    # 9 + 9 beside a shown 10 would be 9 and 9 to one who knows the rule: hide the 10 too.
    ({"PT": 9, "MG": 9, "CT": 10, "MR": 50}, 0, {"PT", "MG", "CT"}),
    ({v: 1 for v in "ABCDEFGHIJKL"} | {"MR": 90}, 0, set("ABCDEFGHIJKL") | {"MR"}),
])
def test_complements_are_the_smallest_counts_that_protect_the_hidden_ones(
    counts, unrecorded, hidden
):
    assert hidden_cells(counts, unrecorded, K) == hidden


@pytest.mark.parametrize(("part", "whole", "hidden"), [
    (300, 300, False), (0, 300, False), (298, 300, True), (2, 300, True), (290, 300, False),
])
def test_a_share_is_hidden_when_either_side_is_small(part, whole, hidden):
    assert share_hidden(part, whole, K) is hidden


def test_age_range_has_k_patients_at_or_beyond_each_end_in_whole_five_years():
    youngest = [13, 25, 26, 26, 27, 28, 28, 29, 30, 31, 32, 32] + [50] * 20
    oldest = [90, 86, 85, 83, 83, 83, 81, 80, 80, 78, 78, 77] + [50] * 20
    low, high = age_range(youngest, oldest, K)
    assert (low, high) == (35, 75)  # 10th youngest 31 rounded up, 10th oldest 78 down
    assert sum(a <= low for a in youngest) >= K
    assert sum(a >= high for a in oldest) >= K


def test_age_range_is_withheld_when_its_ends_would_cross():
    assert age_range(list(range(40, 55)), list(range(40, 55)), K) is None
    assert age_range([30] * 9, [60] * 9, K) is None


def test_date_range_is_whole_months_with_k_patients_each_side():
    first = [date(2015, 1, 10)] + [date(2016, 1, 8)] * 9 + [date(2020, 2, 1)] * 20
    last = [date(2025, 12, 18)] + [date(2024, 2, 29)] * 9 + [date(2020, 2, 1)] * 20
    assert date_range(first, last, K) == (date(2016, 2, 1), date(2024, 2, 29))
    first[1:10] = [date(2016, 1, 1)] * 9  # already a month's first day
    last[1:10] = [date(2024, 3, 30)] * 9
    assert date_range(first, last, K) == (date(2016, 1, 1), date(2024, 2, 29))
    assert date_range([date(2020, 1, 2)] * 20, [date(2020, 1, 2)] * 20, K) is None


def _problems_of_share(share: float, patients: int) -> list[str]:
    return disclosure_problems(DatasetDescriptor(
        node_id="n", node_name="n", generated_at=datetime.now(UTC), suppression_threshold=K,
        patients=patients, completeness=Completeness(patient_sex=share)))


def test_a_share_the_node_publishes_passes_the_readers_check_at_any_base():
    # At large bases several counts round to one 4-decimal share: the reader's check must
    # not take a share of 10 missing for one of 9 (the node would withhold its descriptor).
    checked = 0
    for base in [*range(K, 2000), 13334, 99_991, 1_234_567]:
        for missing in {0, K, K + 1, K + 3, base // 2, base - K, base}:
            if 0 <= missing <= base and not share_hidden(base - missing, base, K):
                share = round((base - missing) / base, SHARE_DIGITS)
                assert _problems_of_share(share, base) == [], (base, missing)
                checked += 1
    assert checked > 5000
    assert _problems_of_share(round(298 / 300, SHARE_DIGITS), 300)  # 2 without: caught
    assert _problems_of_share(round(2 / 300, SHARE_DIGITS), 300)
