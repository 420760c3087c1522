"""The hub's side of a federated statistic: the fan-out rounds and the pooled result.

One fan-out for most statistics: each node sends its summary (gateway/node/query/
statistics.py) and the hub pools them (`spe.stats.combine`), exactly as the statistic of
the union of the nodes' rows. Quantiles and logistic regression take rounds: the hub
searches the quantiles on counts at points (`QuantileSearch`) and fits the model by Newton
steps on the nodes' sums at its coefficients (`logistic_fit`), one fan-out per round, each
under a context of its own naming the query and the round.

A node whose answer fails, is refused or is kept back by its own disclosure rules drops out
of the whole statistic (a statistic over rounds starts again without it); the result's
notes name it and say why. Below the policy's `min_sites` contributing nodes there is no
pooled result.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from starlette.concurrency import run_in_threadpool

from gateway.hub.schemas import FederatedAnswer, NodeResult
from spe.stats import (
    QuantileSearch,
    StatsError,
    kaplan_meier,
    linear_fit,
    logistic_fit,
    logistic_start,
    pooled_correlation,
    pooled_mean_sd,
)
from spe.wire.query import (
    MAX_ROUNDS,
    MAX_STEP_VALUES,
    AgeVariable,
    ImagingVariable,
    Query,
    Step,
    predictor_name,
    variable_name,
)

#: Rounds at most, and thresholds per quantile per round (bounded by the Step's size).
QUANTILE_GRID = 32
QUANTILE_GRID_MAX = 256
#: A quantile is pinned down when its interval is this narrow relative to its value: far
#: below any measurement's precision; where the nodes perturb (each value moved by up to a
#: few per cent of its SD), far below the noise.
QUANTILE_RTOL = 1e-10
QUANTILE_RTOL_PERTURBED = 1e-6
MAX_QUANTILE_ROUNDS = 24
LOGISTIC_ITERATIONS = 25
#: Newton stops when a step is this small (relative to the coefficients): its error is then
#: of the order of the step's square. Where the nodes perturb their sums (which moves the
#: fit by a few per cent of its standard errors), it stops once every step is under 1% of
#: its standard error: the error left is of the order of 0.01% of one, and a round saved.
LOGISTIC_TOL = 1e-10
LOGISTIC_SE_TOL_PERTURBED = 0.01
INTERCEPT = "(intercept)"

AskRound = Callable[[Step | None, set[str] | None], Awaitable[list[NodeResult]]]
"""One fan-out: (the round's step, None for the first; the nodes to ask, None: all)."""


class _Dropped(Exception):
    """Nodes failed in a round: the statistic starts again without them."""

    def __init__(self, nodes: dict[str, str]) -> None:
        super().__init__(", ".join(nodes))
        self.nodes = nodes


@dataclass
class _State:
    first: list[NodeResult]
    contributing: set[str]
    min_sites: int
    notes: list[str] = field(default_factory=list)
    rounds: int = 1

    def drop(self, node_id: str, why: str) -> None:
        if node_id in self.contributing:
            self.contributing.discard(node_id)
            self.notes.append(f"{node_id} left out of this statistic: {why}")


def _why_not(r: NodeResult) -> str | None:
    """Why a node's first answer cannot be pooled (None: it can)."""
    if r.answer is None:
        return f"{r.status}: {r.reason or 'no answer'}"
    if r.answer.statistic is None:
        return "; ".join(r.answer.notes) or "its disclosure rules kept the statistic back"
    return None


def _perturbed(state: _State) -> bool:
    return any(r.answer is not None and r.answer.statistic is not None
               and r.answer.statistic.get("perturbed") for r in state.first
               if r.node_id in state.contributing)


def _parts(state: _State) -> list[dict]:
    return [r.answer.statistic for r in state.first if r.node_id in state.contributing]


def _sum_cells(cells: list[dict], key: dict) -> dict:
    """The pooled count of one bin or table cell: the sum of the sites that showed it;
    suppressed where no site showed it."""
    shown = [c for c in cells if not c.get("suppressed")]
    hidden = len(cells) - len(shown)
    out = {"key": key, "value": None, "suppressed": not shown, "perturbed": False,
           "sd": None, "max_noise": None, "reason": None}
    if not shown:
        out["reason"] = next((c.get("reason") for c in cells if c.get("reason")),
                             "below the threshold at every site")
        return out
    out["value"] = int(sum(c["value"] for c in shown))
    out["perturbed"] = any(c.get("perturbed") for c in shown)
    sds = [c["sd"] for c in shown if c.get("sd") is not None]
    if sds:  # independent noises: the variances add up
        out["sd"] = round(math.sqrt(sum(s * s for s in sds)), 3)
    bounds = [c["max_noise"] for c in shown if c.get("max_noise") is not None]
    if bounds:
        out["max_noise"] = sum(bounds)
    reasons = []
    if out["perturbed"]:
        reasons.append("perturbed at each site (cell-key method)")
    if hidden:
        reasons.append(f"adds up {len(shown)} of {len(cells)} sites: the others had too "
                       "few patients to show")
    out["reason"] = "; ".join(reasons) or None
    return out


def _n_shown(state: _State) -> int:
    return int(sum(r.answer.total.value or 0 for r in state.first
                   if r.node_id in state.contributing and r.answer.total is not None))


# ---------------------------------------------------------------------------- per kind


async def _mean(query: Query, state: _State, ask: AskRound) -> dict:
    pooled = pooled_mean_sd(_parts(state))
    return {"kind": "mean", "variable": variable_name(query.answer.variable), **pooled}


def _search_range(query: Query) -> tuple[float, float]:
    """Where the quantile search starts (values outside are still found)."""
    v = query.answer.variable
    if isinstance(v, AgeVariable):
        return 0.0, 120.0
    if isinstance(v, ImagingVariable):
        return 0.0, 20.0
    return 0.0, 1000.0


def _quantile_search(query: Query, rtol: float = QUANTILE_RTOL) -> QuantileSearch:
    ps = query.answer.quantile_probabilities()
    lo, hi = _search_range(query)
    # As many thresholds per round as a Step carries: fewer rounds (each a fan-out).
    grid = max(QUANTILE_GRID, min(QUANTILE_GRID_MAX, MAX_STEP_VALUES // len(ps) - 24))
    return QuantileSearch(ps, lo, hi, grid=grid, max_rounds=MAX_QUANTILE_ROUNDS,
                          rtol=rtol)


def first_step(query: Query) -> Step | None:
    """What the first fan-out carries beside the query: the quantile search's first
    thresholds, or the logistic model's first coefficients (all 0), so that it is already
    the statistic's first round. None for a statistic of one fan-out."""
    if query.answer.kind == "quantiles":
        return Step(round=1, points=_quantile_search(query).thresholds())
    if query.answer.kind == "logistic":
        return Step(round=1, beta=[0.0] * (len(query.answer.predictors) + 1))
    return None


def _next_step(state: _State) -> int:
    return min(state.rounds + 1, MAX_ROUNDS)


def _first_answers(state: _State) -> dict[str, dict]:
    return {r.node_id: r.answer.statistic for r in state.first
            if r.node_id in state.contributing}


async def _quantiles(query: Query, state: _State, ask: AskRound) -> dict:
    ps = query.answer.quantile_probabilities()
    rtol = QUANTILE_RTOL_PERTURBED if _perturbed(state) else QUANTILE_RTOL
    search = _quantile_search(query, rtol)
    points = search.thresholds()  # those the first fan-out asked (`first_step`)
    answers: dict[str, dict] | None = _first_answers(state)
    # The nodes' shares of the ranks' shift (statistics tier); kept when a node drops out.
    offset = sum(int(a.get("rank_offset", 0)) for a in answers.values())
    search.rank_offset = offset
    while True:
        try:
            if answers is None:
                answers = await _round(state, ask, Step(round=_next_step(state),
                                                        points=points))
            counts = np.sum([a["counts"] for a in answers.values()], axis=0)
            search.update(counts.tolist(), sum(int(a["n"]) for a in answers.values()))
            answers = None
            if search.done or not (points := search.thresholds()):
                break
        except _Dropped:  # again, without the nodes that failed
            search = _quantile_search(query, rtol)
            search.rank_offset = offset
            points, answers = search.thresholds(), None
    unresolved = [p for p, ok in zip(ps, search.resolved, strict=True) if not ok]
    if unresolved:
        state.notes.append("quantile(s) " + ", ".join(f"{p:g}" for p in unresolved)
                           + f" not pinned down within {MAX_QUANTILE_ROUNDS} rounds: the "
                           "upper end of the last interval is shown")
    perturbed = _perturbed(state)
    return {"kind": "quantiles", "variable": variable_name(query.answer.variable),
            "n": _n_shown(state) if perturbed else search.n,
            "quantiles": [{"p": p, "value": v}
                          for p, v in zip(ps, search.values(), strict=True)]}


async def _histogram(query: Query, state: _State, ask: AskRound) -> dict:
    parts = _parts(state)
    edges = query.answer.histogram_edges()
    counts = [_sum_cells([p["counts"][j] for p in parts], {"bin": str(j)})
              for j in range(len(edges) - 1)]
    outside = _sum_cells([p["outside"] for p in parts], {})
    if outside["value"]:
        state.notes.append(f"about {outside['value']} patients have values outside the "
                           "edges and are in no bin")
    return {"kind": "histogram", "variable": variable_name(query.answer.variable),
            "n": _n_shown(state), "edges": edges, "counts": counts}


async def _table(query: Query, state: _State, ask: AskRound) -> dict:
    parts = _parts(state)
    rv, cv = query.answer.variables

    def union(name: str) -> list[str]:
        seen: list[str] = []
        for p in parts:
            seen += [lv for lv in p[name] if lv not in seen]
        return sorted(seen, key=int) if all(s.isdigit() for s in seen) else seen

    rows, cols = union("row_levels"), union("col_levels")
    by_key: dict[tuple[str, str], list[dict]] = {}
    for p in parts:
        for c in p["cells"]:
            by_key.setdefault((c["key"]["row"], c["key"]["col"]), []).append(c)
    cells = [_sum_cells(by_key.get((a, b), []), {"row": a, "col": b}) if (a, b) in by_key
             else {"key": {"row": a, "col": b}, "value": 0, "suppressed": False,
                   "perturbed": False, "sd": None, "max_noise": None,
                   "reason": "structural: no site has this combination of levels"}
             for a in rows for b in cols]
    return {"kind": "table", "rows": variable_name(rv), "cols": variable_name(cv),
            "n": _n_shown(state), "row_levels": rows, "col_levels": cols, "cells": cells}


async def _correlation(query: Query, state: _State, ask: AskRound) -> dict:
    names = [variable_name(v) for v in query.answer.variables]
    return {"kind": "correlation", **pooled_correlation(_parts(state), names)}


async def _linear(query: Query, state: _State, ask: AskRound) -> dict:
    names = [INTERCEPT, *(predictor_name(v) for v in query.answer.predictors)]
    return {"kind": "linear", "outcome": variable_name(query.answer.outcome),
            **linear_fit(_parts(state), names)}


async def _logistic(query: Query, state: _State, ask: AskRound) -> dict:
    names = [INTERCEPT, *(predictor_name(v) for v in query.answer.predictors)]
    loop = asyncio.get_running_loop()
    answers = _first_answers(state)  # at beta = 0, each with the node's own fit
    first: list[list[dict] | None] = [list(answers.values())]
    start = logistic_start([a.get("local") for a in answers.values()])

    def step(beta: np.ndarray) -> list[dict]:
        # In a worker thread (logistic_fit calls it): each Newton step is a fan-out on
        # the hub's loop; the first fan-out's answers serve a first step at 0.
        cached, first[0] = first[0], None
        if cached is not None and not np.any(beta):
            return cached
        future = asyncio.run_coroutine_threadsafe(_round(state, ask, Step(
            round=_next_step(state), beta=beta.tolist())), loop)
        return list(future.result().values())

    while True:
        try:
            fit = await run_in_threadpool(functools.partial(
                logistic_fit, step, names, len(names), LOGISTIC_ITERATIONS, LOGISTIC_TOL,
                start=start,
                se_tol=LOGISTIC_SE_TOL_PERTURBED if _perturbed(state) else None))
            break
        except _Dropped:  # again from 0, without the nodes that failed
            start = None
    fit.pop("information", None)
    if not fit["converged"]:
        state.notes.append(
            f"the model did not converge in {fit['iterations']} rounds (an outcome "
            "predicted perfectly by a predictor, or collinear predictors): no estimates are "
            "shown; drop or merge predictors")
        fit["coefficients"] = []
    return {"kind": "logistic", "outcome": variable_name(query.answer.outcome), **fit}


async def _survival(query: Query, state: _State, ask: AskRound) -> dict:
    parts = _parts(state)
    unit = query.answer.unit
    km = kaplan_meier([{k: p[k] for k in ("times", "events", "censored")} for p in parts],
                      unit)
    cuts = {r.node_id: r.answer.statistic["cut"] for r in state.first
            if r.node_id in state.contributing and r.answer.statistic.get("cut") is not None}
    if cuts:
        cut = min(cuts.values())
        km["steps"] = [s for s in km["steps"] if s["t"] < cut]
        state.notes.append(
            f"the curve stops at {cut:g} {unit}(s): from there fewer patients remain at "
            f"risk at {', '.join(sorted(n for n, c in cuts.items() if c == cut))} than its "
            "rules allow to show")
    if _perturbed(state):
        km["n"] = _n_shown(state)
    return {"kind": "survival", **km}


KINDS = {"mean": _mean, "quantiles": _quantiles, "histogram": _histogram, "table": _table,
         "correlation": _correlation, "linear": _linear, "logistic": _logistic,
         "survival": _survival}


# ---------------------------------------------------------------------------- rounds


async def _round(state: _State, ask: AskRound, step: Step) -> dict[str, dict]:
    """One fan-out to the contributing nodes; node -> its statistic. Nodes that fail are
    dropped and `_Dropped` raised (the statistic starts again without them)."""
    if len(state.contributing) < max(state.min_sites, 1):
        raise StatsError(f"only {len(state.contributing)} site(s) left, at least "
                         f"{max(state.min_sites, 1)} are needed")
    state.rounds += 1
    results = await ask(step, set(state.contributing))
    failed = {}
    for r in results:
        why = _why_not(r)
        if why:
            failed[r.node_id] = why
    if failed:
        for node_id, why in failed.items():
            state.drop(node_id, f"in round {step.round}, {why}")
        raise _Dropped(failed)
    return {r.node_id: r.answer.statistic for r in results}


async def federated_statistic(query: Query, ask: AskRound, *, query_hash: str, tier: str,
                              min_sites: int) -> FederatedAnswer:
    """Ask the nodes (`ask(step, nodes)`: one fan-out) and pool their summaries."""
    first = await ask(first_step(query), None)
    state = _State(first, set(), min_sites)
    for r in first:
        why = _why_not(r)
        if why is None:
            state.contributing.add(r.node_id)
        else:
            state.notes.append(f"{r.node_id} left out of this statistic: {why}")
    out = FederatedAnswer(query_hash=query_hash, tier=tier, kind=query.answer.kind,
                          nodes=first, sites_answering=len(state.contributing),
                          min_sites=min_sites)
    result = None
    if len(state.contributing) >= min_sites and state.contributing:
        try:
            result = await KINDS[query.answer.kind](query, state, ask)
        except StatsError as exc:
            state.notes.append(f"not computed: {exc}")
        except (KeyError, TypeError, ValueError, IndexError):
            # A node's summary not of the shape its kind has: nothing pooled from it.
            state.notes.append("not computed: a site's summary was malformed")
    if len(state.contributing) < max(min_sites, 1):
        state.notes.append(f"{len(state.contributing)} of {len(first)} sites could "
                           f"contribute; at least {max(min_sites, 1)} are needed for a "
                           "pooled statistic")
        result = None
    out.sites_answering = len(state.contributing)
    if result is not None:
        result["perturbed"] = _perturbed(state)
        result["notes"] = state.notes
        result["rounds"] = state.rounds
    for r in first:  # a round's summary is the hub's; a node shows its n
        if r.answer is not None and query.answer.kind in ("quantiles", "logistic"):
            r.answer.statistic = None if r.answer.statistic is None else {
                "n": r.answer.total.value if r.answer.total else None,
                "perturbed": bool(r.answer.statistic.get("perturbed"))}
    out.result = result
    out.notes = list(state.notes)
    return out


__all__ = ["federated_statistic", "first_step"]
