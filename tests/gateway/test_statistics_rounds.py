"""The hub's rounds (gateway/hub/statistics.py) with nodes that answer from arrays in
memory: a node failing in a later round drops out of the whole statistic, which starts
again without it and says so; a malformed summary is a note, not a 500."""

from __future__ import annotations

import asyncio

import numpy as np

from gateway.hub.schemas import NodeResult
from gateway.hub.statistics import federated_statistic
from spe.stats import summaries
from spe.wire.query import Cell, NodeAnswer, Query

RNG = np.random.default_rng(7)
DATA = {"a": RNG.normal(50, 10, 200), "b": RNG.normal(55, 12, 150), "c": RNG.normal(45, 8, 90)}
AGE_Q = Query.model_validate({"where": {"type": "patient", "sex": "female"},
                              "answer": {"kind": "quantiles", "variable": {"type": "age"},
                                         "probabilities": [0.25, 0.5, 0.75]}})


def _answer(node: str, statistic: dict | None, notes=()) -> NodeResult:
    x = DATA[node]
    return NodeResult(node_id=node, status="answered" if statistic else "suppressed", ms=1.0,
                      answer=NodeAnswer(node_id=node, tier="permit", kind="quantiles",
                                        threshold=0, rounding=1, statistic=statistic,
                                        total=Cell(value=len(x)), notes=list(notes)))


def _asker(fail_in_round: dict[str, int]):
    asked: list[tuple[int, frozenset]] = []

    async def ask(step, only):
        round_ = 0 if step is None else step.round
        asked.append((round_, frozenset(only or DATA)))
        out = []
        for node in sorted(only or DATA):
            if fail_in_round.get(node) == round_ and step is not None:
                out.append(NodeResult(node_id=node, status="timed_out", ms=5.0,
                                      reason="no answer within 3 s"))
                continue
            stat = {"n": len(DATA[node]), "perturbed": False}
            if step is not None:
                stat["counts"] = summaries.counts_at_or_below(DATA[node], step.points)
            out.append(_answer(node, stat))
        return out

    return ask, asked


def test_a_node_failing_mid_search_drops_out_and_the_search_starts_again():
    ask, asked = _asker({"b": 2})
    body = asyncio.run(federated_statistic(AGE_Q, ask, query_hash="h", tier="permit",
                                           min_sites=1))
    pooled = np.concatenate([DATA["a"], DATA["c"]])
    expected = np.quantile(pooled, [0.25, 0.5, 0.75], method="inverted_cdf")
    got = [q["value"] for q in body.result["quantiles"]]
    assert np.allclose(got, expected, rtol=1e-9, atol=0)
    assert body.result["n"] == len(pooled)
    assert any("b left out of this statistic: in round 2, timed_out" in n
               for n in body.result["notes"])
    assert body.sites_answering == 2
    assert all("b" not in nodes for r, nodes in asked if r > 2)  # never asked again


def test_too_few_sites_left_is_a_note_not_a_result():
    ask, _ = _asker({"b": 1, "c": 1})
    body = asyncio.run(federated_statistic(AGE_Q, ask, query_hash="h", tier="statistics",
                                           min_sites=2))
    assert body.result is None
    assert any("at least 2 are needed" in n for n in body.notes)


def test_a_malformed_summary_is_a_note():
    async def ask(step, only):
        return [_answer(n, {"n": "many", "perturbed": False}) for n in DATA]

    mean = Query.model_validate({"where": {"type": "patient", "sex": "female"},
                                 "answer": {"kind": "mean", "variable": {"type": "age"}}})
    body = asyncio.run(federated_statistic(mean, ask, query_hash="h", tier="permit",
                                           min_sites=1))
    assert body.result is None
    assert any("malformed" in n for n in body.notes)


def test_a_refusing_node_is_named_with_its_reason():
    async def ask(step, only):
        out = [_answer(n, {**summaries.moments(DATA[n]), "perturbed": False})
               for n in ("a", "b")]
        return [*out, _answer("c", None, ["fewer than 10 patients of the cohort at this "
                                          "site have a value of age"])]

    mean = Query.model_validate({"where": {"type": "patient", "sex": "female"},
                                 "answer": {"kind": "mean", "variable": {"type": "age"}}})
    body = asyncio.run(federated_statistic(mean, ask, query_hash="h", tier="permit",
                                           min_sites=1))
    pooled = np.concatenate([DATA["a"], DATA["b"]])
    assert np.isclose(body.result["mean"], pooled.mean(), rtol=1e-12)
    assert body.result["n"] == len(pooled)
    assert any(n.startswith("c left out of this statistic: fewer than 10") for n in
               body.result["notes"])
    assert [r.status for r in body.nodes] == ["answered", "answered", "suppressed"]
