"""The hub's combination of the nodes' answers (gateway/hub/combine.py): sums of what the
nodes showed, with the uncertainty of perturbed counts and a reason for each value."""

from __future__ import annotations

import math

import pytest

from gateway.hub.combine import combine
from gateway.hub.schemas import NodeResult
from spe.wire.query import Cell, NodeAnswer

REASON = "perturbed by at most ±5 (cell-key method); the same question always gives this value"


def shown(value: int, **key: str) -> Cell:
    return Cell(key=key, value=value, perturbed=True, max_noise=5, sd=2.0, reason=REASON)


def hidden(**key: str) -> Cell:
    return Cell(key=key, value=None, suppressed=True, reason="fewer than 10 patients: ...")


def result(node: str, total: Cell, cells: list[Cell] | None = None,
           kind: str = "stratified") -> NodeResult:
    return NodeResult(node_id=node, status="answered", ms=1.0, answer=NodeAnswer(
        node_id=node, tier="statistics", kind=kind, total=total, cells=cells or [],
        threshold=10, rounding=1))


def test_perturbed_counts_add_up_with_their_combined_spread():
    results = [
        result("a", shown(120), [shown(70, sex="female"), shown(50, sex="male")]),
        result("b", shown(40), [shown(33, sex="female"), hidden(sex="male")]),
        result("c", hidden(), [hidden(sex="female"), hidden(sex="male")]),
    ]
    out = combine(results, query_hash="h", tier="statistics", kind="stratified", min_sites=2)
    assert out.total.value == 160
    assert out.total.perturbed
    assert out.total.max_noise == 10
    assert out.total.sd == pytest.approx(math.sqrt(8))
    assert "2 site(s)" in out.total.reason
    cells = {c.key["sex"]: c for c in out.cells}
    assert cells["female"].value == 103
    assert cells["female"].sd == pytest.approx(math.sqrt(8))
    assert cells["male"].value == 50
    assert cells["male"].max_noise == 5
    assert "leaves out b, c" in cells["male"].reason
    assert any("leaves out the suppressed answers of c" in n for n in out.notes)
    assert any("within ±10" in n for n in out.notes)


def test_a_cell_no_site_shows_is_suppressed_with_what_to_do():
    results = [result("a", shown(30), [hidden(sex="other")]),
               result("b", shown(30), [hidden(sex="other")])]
    out = combine(results, query_hash="h", tier="statistics", kind="stratified", min_sites=2)
    (cell,) = out.cells
    assert (cell.value, cell.suppressed) == (None, True)
    assert "widen the question" in cell.reason


def test_exact_counts_stay_exact():
    exact = [result("a", Cell(value=3), kind="count"), result("b", Cell(value=0), kind="count")]
    out = combine(exact, query_hash="h", tier="permit", kind="count", min_sites=1)
    assert out.total == Cell(value=3)
    assert not any("perturbed" in n for n in out.notes)


def test_no_site_over_the_threshold_gives_no_total_and_says_why():
    out = combine([result("a", hidden(), kind="count"), result("b", hidden(), kind="count")],
                  query_hash="h", tier="statistics", kind="count", min_sites=2)
    assert out.total.suppressed
    assert "widen the question" in out.total.reason
