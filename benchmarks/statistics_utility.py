"""What the statistics tier gives a researcher, and what it gives an attacker (issue 16).

The demo federation (`spe.synth`, three institutions, `--patients` each, default 10,000:
generated and synced into the nodes' indexes once, then cached under
`var/bench-cache/`, see `bench_federation.demo_indexes`) is served by three nodes over
mutual TLS and the hub, each in its own process (`bench_federation.Federation`, fresh
copies of the indexes every run). The script measures, through the hub's HTTP API as a
researcher calls it:

1. accuracy: the relative error |shown - true| / true of every count a node showed (totals
   and cells of the questions of 2.), by the true size of the cell (10-19, 20-49, 50-99,
   100-499, 500+). True counts come from the same index with the node's own evaluator
   (`gateway.node.query.evaluate`, before any disclosure control), read in this process.
   Target: at most 5% for cells of 100 or more;
2. utility: one fresh researcher asks a fixed list of realistic stratified questions (ten
   common ICD-10 categories of the synthetic data; no filter, or a sex, age or modality
   filter; by sex, age band, modality or site; never by the dimension filtered on: 130
   questions). Reported: the share of combined cells shown (a perturbed value counts as
   shown; so does a sum of only the sites that showed the cell, which is also counted
   apart, as is each site's own share), the share of combined totals shown (likewise),
   and how many answers were touched by the
   differencing defence (a suppressed or refused value whose reason names differencing).
   Targets (after issue 16): totals >= 90%, cells >= 50%, differencing 0;
3. attack: a scripted differencing campaign by a fresh researcher: for target groups of
   1-9 patients at a node (a condition, a sex and one year of age at a study: picked from
   the index), the broad question (the condition) and the same excluding the group. An
   exact recovery is a node whose two totals are declared exact (rounding 1, not
   perturbed) and differ by the group's true size there; a difference that equals the
   size by chance through rounding or noise is counted apart as a right guess, beside
   the chance baseline (the difference is 0 where the group is empty). Also
   counted: refusals for differencing in that campaign at nodes where the group has 1-9
   patients and at nodes where it has none (a refusal that depends on the small group is
   an oracle). Target: 0 recoveries;
4. latency through the hub, p50 and p95 over `--latency-rounds` requests of each answer
   kind (count, stratified, boolean, and the statistics mean, quantiles, histogram, table,
   correlation, linear, logistic, survival: "n/a (not supported)" when the hub does not
   know the kind, a 422 on `answer.kind`; `--stat-queries` mends an example query the hub
   refuses otherwise).
   Target p50 <= 100 ms each; timings are printed, never asserted.

`--json PATH` writes every figure. Researchers call the hub over plain HTTP on loopback;
hub -> node is mutual TLS. One machine runs the hub, the nodes and the client.

Before issue 16 (commit 9c5132a: statistics tier suppresses counts under 10, rounds to 5
and refuses for differencing; 2 cores shared with other work, 2026-12-04). Set-up at
3 x 10,000: generation 1,143 s (212,537 DICOM instances) + sync 156 s, once; cached runs
take about 40 s.

    3 x 10,000 patients                      before issue 16     target after
    1. error of shown counts, cells 100+     max 1.94%           <= 5%
       (rounding only: 10-19 max 11.8%, 20-49 9.1%, 50-99 3.9%, 500+ 0.4%)
    2. combined totals shown                 42/130 (32%)        >= 90%
         ... with every site's total in it   29/130 (22%)
       combined cells shown                  347/570 (61%)       >= 50%
         ... with every site's cell in it    132/570 (23%)
       each site's own cells shown           673/1470 (46%)
       answers touched by differencing       67 of 130           0
    3. exact recoveries of groups of 1-9     0 of 76 (nodes), 0 of 24 (combined)    0
       both totals shown (so: right guesses) 0 of 76 (0 of 76)
       differencing refusals as an oracle    76/76 where the group has 1-9, 0/27 where none
    4. p50 / p95 through the hub             count 38.5 / 40.9 ms, stratified 95.2 / 161.3 ms
                                             (118.7 / 170.2 and 125.0 / 144.5 ms in other
                                             runs), boolean 22.5 / 27.9 ms; mean,
                                             quantiles, histogram, table, correlation,
                                             linear, logistic, survival: n/a (not supported)

    The same at the demo's default size, 3 x 300 patients (`--patients 300`): totals shown
    15/130 (12%; 3 with every site), cells 62/570 (11%; each site's own 77/1470, 5%),
    65 of 130 answers touched by differencing; 0 exact recoveries of 47, refusals 34/47
    where the group has 1-9 and 22/73 where it has none.

    The refusal is the leak before this issue: no difference is ever shown, but whether
    the second question is refused says whether the group is non-empty and small.

After issue 16 (cell-key perturbation, federated statistics; 2026-12-05, same machine,
quiet; with half of each continuous perturbation keyed by the question, quantile ranks
moved by up to 2 per node, and the statistics' limits met by counts as shown):

    3 x 10,000 patients                      after issue 16
    1. error of shown counts, cells 100+     max 4.46% (mean 0.83% at 100-499, 0.20% 500+)
    2. combined totals shown                 127/130 (98%)
         ... with every site's total in it   124/130 (95%)
       combined cells shown                  402/480 (84%; 98% of cells with 10+)
       each site's own cells shown           884/1200 (74%)
       answers touched by differencing       0 of 130
    3. exact recoveries of groups of 1-9     0 of 76 (nodes), 0 of 24 (combined)
       right guesses (perturbed difference   11/76 (14%); chance, empty group: 8/27 (30%)
       that happens to equal the size)
       differencing refusals as an oracle    0/76 where the group has 1-9, 0/27 where none
    4. p50 / p95 through the hub (ms)        count 22.6 / 25.9, stratified 59.8 / 148.4,
                                             boolean 19.3 / 21.6, mean 49.8 / 57.2,
                                             quantiles 53.4 / 58.2, histogram 38.7 / 43.2,
                                             table 40.2 / 49.7, correlation 62.2 / 73.7,
                                             linear 69.1 / 120.6, logistic 73.8 / 81.2,
                                             survival 67.1 / 74.0
       (a run while other tests shared the 2 cores: linear p50 113.1 ms, the rest under
       100: the targets need a machine not busy with other work)

    The noise's secret is new each run (fresh node data directories): the figures of 1-3
    move by a few points between runs, the targets hold.

    python benchmarks/statistics_utility.py [--patients 10000] [--questions 130]
        [--targets 40] [--latency-rounds 50] [--json PATH] [--refresh]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_federation import Federation, demo_indexes, pct  # noqa: E402

# Ten ICD-10 categories common in the synthetic data (spe/synth/codes.py; prevalence
# 1.5-28%), each asked as a category (prefix).
CONDITIONS = ("I10", "E11", "I63", "I21", "J44", "C71", "G35", "G30", "C50", "C34")
FILTERS = {
    "none": None,
    "sex": {"type": "patient", "sex": "female"},
    "age": {"type": "patient", "age": {"min": 65}},
    "modality": {"type": "imaging", "modality": ["CT"]},
}
BY = ("sex", "age_band", "modality", "site")
SKIP = {("sex", "sex"), ("age", "age_band"), ("modality", "modality")}
BUCKETS = ((10, 19), (20, 49), (50, 99), (100, 499), (500, None))
TARGET_ERROR_100 = 0.05
TARGET_TOTALS, TARGET_CELLS = 0.90, 0.50
TARGET_P50_MS = 100.0
USER_QUERIES = 100  # latency: a new researcher every 100 queries (daily budget 200)

LATENCY_QUERIES = {
    "count": {"where": {"type": "and", "of": [
        {"type": "patient", "sex": "female", "age": {"min": 40, "max": 70}},
        {"type": "condition", "system": "icd-10", "code": "C", "prefix": True}]},
        "answer": {"kind": "count"}},
    "stratified": {"where": {"type": "condition", "system": "icd-10", "code": "I10",
                             "prefix": True},
                   "answer": {"kind": "stratified", "by": ["sex", "age_band"]}},
    "boolean": {"where": {"type": "condition", "system": "icd-10", "code": "C71",
                          "prefix": True},
                "answer": {"kind": "boolean"}},
}
# The statistics of issue 16, one realistic question each, in the request shapes of the
# README's "federated statistics" table (`--stat-queries FILE`: {kind: query} replaces any).
_DIABETES = {"type": "condition", "system": "icd-10", "code": "E11", "prefix": True}
_HYPERTENSION = {"type": "condition", "system": "icd-10", "code": "I10", "prefix": True}
_SYSTOLIC = {"type": "observation", "code": "8480-6", "unit": "mm[Hg]"}
_WEIGHT = {"type": "observation", "code": "29463-7", "unit": "kg"}
_AGE, _SEX = {"type": "age"}, {"type": "sex"}
STAT_QUERIES = {
    "mean": {"where": _DIABETES, "answer": {"kind": "mean", "variable": _WEIGHT}},
    "quantiles": {"where": _DIABETES, "answer": {"kind": "quantiles", "variable": _AGE,
                                                 "probabilities": [0.25, 0.5, 0.75]}},
    "histogram": {"where": _DIABETES, "answer": {"kind": "histogram", "variable": _AGE,
                                                 "edges": [0, 18, 40, 65, 120]}},
    "table": {"where": _DIABETES, "answer": {"kind": "table",
                                             "variables": [_SEX, _HYPERTENSION]}},
    "correlation": {"where": _DIABETES, "answer": {"kind": "correlation",
                                                   "variables": [_AGE, _SYSTOLIC]}},
    "linear": {"where": _DIABETES, "answer": {"kind": "linear", "outcome": _SYSTOLIC,
                                              "predictors": [_AGE, _SEX]}},
    "logistic": {"where": {"type": "patient", "age": {"min": 40}}, "answer": {
        "kind": "logistic", "outcome": _HYPERTENSION, "predictors": [_AGE, _SEX]}},
    "survival": {"where": _DIABETES, "answer": {
        "kind": "survival", "start": {"type": "study"}, "end": _HYPERTENSION,
        "unit": "month"}},
}


# ------------------------------------------------------------------------- questions


def condition(code: str) -> dict:
    return {"type": "condition", "system": "icd-10", "code": code, "prefix": True}


def questions() -> list[dict]:
    """The researcher's questions, in a fixed order: by condition, filter, stratum."""
    out = []
    for code in CONDITIONS:
        for fname, extra in FILTERS.items():
            for by in BY:
                if (fname, by) in SKIP:
                    continue
                where = condition(code) if extra is None else {
                    "type": "and", "of": [condition(code), extra]}
                out.append({"where": where, "answer": {"kind": "stratified", "by": [by]}})
    return out


def label(q: dict) -> str:
    w = q["where"]
    parts = [c for c in w.get("of", [w])]
    text = " & ".join(
        c["code"] if c["type"] == "condition" else c.get("sex") or (
            f"age>={c['age']['min']}" if c["type"] == "patient" else "/".join(c["modality"]))
        for c in parts)
    return f"{text} by {','.join(q['answer'].get('by', [])) or q['answer']['kind']}"


# ------------------------------------------------------------------------- true counts


def cell_key(key: dict) -> tuple:
    return tuple(sorted(key.items()))


@dataclass
class Exact:
    ids: np.ndarray
    cells: dict[tuple, np.ndarray]


class Truth:
    """Exact answers from the nodes' indexes (read here, never through the API)."""

    def __init__(self, dbs: dict[str, Path]) -> None:
        from spe.db import make_engine, make_sessionmaker

        self.engines = {s: make_engine(f"sqlite:///{db}") for s, db in dbs.items()}
        self.sessions = {s: make_sessionmaker(e) for s, e in self.engines.items()}

    def evaluate(self, query: dict) -> dict[str, object]:
        from gateway.node.query.evaluate import evaluate
        from spe.wire.query import Query

        q = Query.model_validate(query)
        out = {}
        for site, make in self.sessions.items():
            with make() as session:
                ev = evaluate(session, q, node_id=site)
            # Cells by their sorted key, as the hub's answers name them.
            out[site] = Exact(ev.ids, {cell_key(dict(k)): ids for k, ids in ev.cells.items()})
        return out

    def close(self) -> None:
        for e in self.engines.values():
            e.dispose()


# ------------------------------------------------------------------------- asking


class Researcher:
    """One researcher asking the hub over one keep-alive connection."""

    def __init__(self, fed: Federation, user: str) -> None:
        self.fed = fed
        self.user = user
        self.token = fed.token(user)
        self.client = httpx.Client(base_url=fed.hub_url, timeout=120)

    def ask(self, query: dict) -> tuple[int, float, dict]:
        t = time.perf_counter()
        resp = self.client.post("/api/v1/query", json=query,
                                headers={"Authorization": f"Bearer {self.token}"})
        ms = (time.perf_counter() - t) * 1000
        try:
            body = resp.json()
        except ValueError:
            body = {"text": resp.text[:300]}
        return resp.status_code, ms, body

    def close(self) -> None:
        self.client.close()


def _mentions_differencing(text: str | None) -> bool:
    return bool(text) and "differenc" in text.lower()


def differencing_touched(body: dict) -> bool:
    """A suppressed or refused value whose reason names differencing, at a node or in the
    combined answer. Notes that are not about a withheld value (e.g. saying that
    perturbation makes differencing useless) do not count."""
    for node in body.get("nodes", []):
        if node.get("status") == "refused" and _mentions_differencing(node.get("reason")):
            return True
        answer = node.get("answer") or {}
        items = [answer.get("total") or {}, *(answer.get("cells") or [])]
        suppressed_names = {"total" if not c.get("key") else "|".join(
            f"{k}={v}" for k, v in c["key"].items()) for c in items if c.get("suppressed")}
        for c in items:
            if c.get("suppressed") and _mentions_differencing(c.get("reason")):
                return True
        for note in answer.get("notes") or []:
            if not _mentions_differencing(note):
                continue
            name = note.split(": ", 1)[0]
            if name in suppressed_names or re.search(r"suppress|refus|withh", note, re.I):
                return True
    for c in [body.get("total") or {}, *(body.get("cells") or [])]:
        if c.get("suppressed") and _mentions_differencing(c.get("reason")):
            return True
    return False


def shown(cell: dict | None) -> bool:
    return bool(cell) and not cell.get("suppressed") and cell.get("value") is not None


def run_questions(fed: Federation, truth: Truth, qs: list[dict], user: str) -> dict:
    """Part 2 (utility) and the pairs for part 1 (accuracy)."""
    r = Researcher(fed, user)
    pairs: list[tuple[int, int]] = []  # (true, shown) of every count a node showed
    combined_pairs: list[tuple[int, int]] = []  # the same for the combined figures
    cells = cells_shown = cells_complete = 0
    node_cells_all = node_cells_shown = 0  # each site's own cells
    real = real_shown = 0  # combined cells whose true count is at least 10
    totals = totals_shown = totals_complete = 0
    touched: list[str] = []
    errors: list[str] = []
    times: list[float] = []
    per_question = []
    for q in qs:
        exact = truth.evaluate(q)
        status, ms, body = r.ask(q)
        times.append(ms)
        if status != 200:
            errors.append(f"{label(q)}: HTTP {status} {str(body)[:200]}")
            continue
        nodes = {n["node_id"]: n for n in body["nodes"]}
        answering = [n for n in nodes.values() if n.get("answer")]
        for site, n in nodes.items():
            a = n.get("answer") or {}
            ev = exact[site]
            if shown(a.get("total")):
                pairs.append((len(ev.ids), a["total"]["value"]))
            for c in a.get("cells") or []:
                node_cells_all += 1
                node_cells_shown += shown(c)
                if shown(c):
                    true = len(ev.cells.get(cell_key(c["key"]), ()))
                    pairs.append((true, c["value"]))
        totals += 1
        true_total = sum(len(ev.ids) for ev in exact.values())
        if shown(body.get("total")):
            totals_shown += 1
            combined_pairs.append((true_total, body["total"]["value"]))
            totals_complete += all(shown((n["answer"] or {}).get("total")) for n in answering)
        # Each combined cell, and how many of the answering nodes showed it.
        node_cells = defaultdict(int)
        for n in answering:
            for c in n["answer"].get("cells") or []:
                node_cells[cell_key(c["key"])] += shown(c)
        for c in body.get("cells") or []:
            key = cell_key(c["key"])
            true = sum(len(ev.cells.get(key, ())) for ev in exact.values())
            cells += 1
            real += true >= 10
            if shown(c):
                cells_shown += 1
                real_shown += true >= 10
                cells_complete += node_cells[key] == len(answering)
                combined_pairs.append((true, c["value"]))
        hit = differencing_touched(body)
        if hit:
            touched.append(label(q))
        per_question.append({"question": label(q), "ms": round(ms, 1),
                             "total_shown": shown(body.get("total")),
                             "cells": len(body.get("cells") or []),
                             "cells_shown": sum(shown(c) for c in body.get("cells") or []),
                             "differencing": hit})
    r.close()
    return {"questions": len(qs), "answered": len(qs) - len(errors), "errors": errors,
            "cells": cells, "cells_shown": cells_shown, "cells_complete": cells_complete,
            "node_cells": node_cells_all, "node_cells_shown": node_cells_shown,
            "cells_true_10_plus": real, "cells_true_10_plus_shown": real_shown,
            "totals": totals, "totals_shown": totals_shown,
            "totals_complete": totals_complete,
            "differencing_touched": len(touched), "differencing_examples": touched[:5],
            "ms_p50": round(pct(times, 50), 1) if times else None,
            "per_question": per_question,
            "_pairs": pairs, "_combined_pairs": combined_pairs}


def accuracy(pairs: list[tuple[int, int]]) -> list[dict]:
    out = []
    for low, high in BUCKETS:
        errs = np.array([abs(s - t) / t for t, s in pairs
                         if t >= low and (high is None or t <= high)], dtype=float)
        name = f"{low}-{high}" if high else f"{low}+"
        out.append({"bucket": name, "n": int(len(errs)),
                    "mean": float(errs.mean()) if len(errs) else None,
                    "p95": float(np.percentile(errs, 95)) if len(errs) else None,
                    "max": float(errs.max()) if len(errs) else None,
                    "exact_share": float((errs == 0).mean()) if len(errs) else None})
    return out


# ------------------------------------------------------------------------- the attack


def pick_targets(truth: Truth, wanted: int) -> list[dict]:
    """Groups of 1-9 patients at some node: a condition, a sex, one year of age at a study.
    Taken round-robin over the conditions, youngest first, so the list is deterministic."""
    by_condition: dict[str, list[dict]] = {code: [] for code in CONDITIONS}
    enough = -(-2 * wanted // len(CONDITIONS))  # candidates per condition
    for code in CONDITIONS:
        slices = [(age, sex) for age in range(30, 96, 3) for sex in ("female", "male")]
        for age, sex in slices:
            if len(by_condition[code]) >= enough:
                break
            group = {"type": "patient", "sex": sex, "age": {"min": age, "max": age}}
            exact = truth.evaluate({"where": {"type": "and", "of": [condition(code), group]}})
            sizes = {s: len(ev.ids) for s, ev in exact.items()}
            if any(1 <= n <= 9 for n in sizes.values()):
                by_condition[code].append({"condition": code, "group": group,
                                           "sizes": sizes})
    out: list[dict] = []
    while len(out) < wanted and any(by_condition.values()):
        for code in CONDITIONS:
            if by_condition[code] and len(out) < wanted:
                out.append(by_condition[code].pop(0))
    return out


def node_totals(body: dict) -> dict[str, dict]:
    return {n["node_id"]: n for n in body.get("nodes", [])}


def exact_value(answer: dict) -> bool:
    """The node's total is the true count, as the answer itself says (rounding 1, not
    perturbed): a difference of two such totals is certain."""
    total = answer.get("total") or {}
    return shown(total) and answer.get("rounding", 1) == 1 and not total.get("perturbed")


def run_attack(fed: Federation, truth: Truth, targets: list[dict], user: str) -> dict:
    """Per node: the difference of the two totals as the attacker's estimate of the group.
    An exact recovery is a difference equal to the true size (1-9) of two totals the
    answers declare exact; a right guess is a difference equal to the true size of any
    two shown totals (rounded or perturbed: the attacker cannot tell it from a wrong
    one). Right guesses of an empty group (difference 0) are the chance baseline."""
    r = Researcher(fed, user)
    broad: dict[str, dict] = {}
    attempts = recoveries = guesses = both_shown = 0
    attempts_none = guesses_none = 0
    combined_attempts = combined_recoveries = combined_guesses = 0
    refused_small = refused_none = nodes_small = nodes_none = 0
    examples = []
    queries = 0
    for t in targets:
        code = t["condition"]
        if code not in broad:
            _, _, broad[code] = r.ask({"where": condition(code), "answer": {"kind": "count"}})
            queries += 1
        q2 = {"where": {"type": "and", "of": [condition(code),
                                                {"type": "not", "of": t["group"]}]},
              "answer": {"kind": "count"}}
        status, _, body = r.ask(q2)
        queries += 1
        if status != 200:
            continue
        first, second = node_totals(broad[code]), node_totals(body)
        for site, size in t["sizes"].items():
            a1 = (first.get(site) or {}).get("answer") or {}
            a2 = (second.get(site) or {}).get("answer") or {}
            oracle = differencing_touched({"nodes": [second.get(site) or {}]})
            if 1 <= size <= 9:
                nodes_small += 1
                refused_small += oracle
            elif size == 0:
                nodes_none += 1
                refused_none += oracle
            if size > 9:
                continue
            both = shown(a1.get("total")) and shown(a2.get("total"))
            right = both and a1["total"]["value"] - a2["total"]["value"] == size
            if size == 0:
                attempts_none += 1
                guesses_none += right
                continue
            attempts += 1
            both_shown += both
            guesses += right
            if right and exact_value(a1) and exact_value(a2):
                recoveries += 1
                if len(examples) < 5:
                    examples.append(f"{code} {t['group']['sex']} aged "
                                    f"{t['group']['age']['min']} at {site}: {size}")
        true_combined = sum(t["sizes"].values())
        if 1 <= true_combined <= 9:
            combined_attempts += 1
            t1, t2 = broad[code].get("total") or {}, body.get("total") or {}
            if shown(t1) and shown(t2) and t1["value"] - t2["value"] == true_combined:
                combined_guesses += 1
                # The combined figure is exact only if every site's total in it is.
                combined_recoveries += all(
                    exact_value(n.get("answer") or {}) for n in [
                        *broad[code].get("nodes", []), *body.get("nodes", [])]
                    if n.get("answer"))
    r.close()
    return {"targets": len(targets), "queries": queries, "node_attempts": attempts,
            "both_totals_shown": both_shown,
            "exact_recoveries": recoveries, "right_guesses": guesses,
            "empty_group_attempts": attempts_none, "empty_group_right_guesses": guesses_none,
            "combined_attempts": combined_attempts,
            "combined_exact_recoveries": combined_recoveries,
            "combined_right_guesses": combined_guesses, "examples": examples,
            "differencing_refusals_group_1_9": refused_small, "nodes_group_1_9": nodes_small,
            "differencing_refusals_group_0": refused_none, "nodes_group_0": nodes_none}


# ------------------------------------------------------------------------- latency


def run_latency(fed: Federation, rounds: int, run: str, stat_queries: dict) -> dict:
    out: dict[str, dict] = {}
    n_user = 0

    def researcher() -> Researcher:
        nonlocal n_user
        n_user += 1
        return Researcher(fed, f"latency-{run}-{n_user:03d}")

    for kind, query in {**LATENCY_QUERIES, **stat_queries}.items():
        r = researcher()
        status, _, body = r.ask(query)  # warm-up; also says whether the kind is accepted
        if status != 200:
            reason = body.get("detail") or body.get("error") or body
            # Not supported: the hub does not know the kind. Any other refusal (this
            # script's example query not fitting the kind's parameters, say) is reported
            # as such, with the hub's reason, so the example can be mended.
            unknown_kind = status == 422 and isinstance(reason, list) and any(
                e.get("loc", [])[-1:] == ["kind"] for e in reason if isinstance(e, dict))
            out[kind] = {"supported": False, "status": status, "unknown_kind": unknown_kind,
                         "detail": json.dumps(reason)[:300]}
            r.close()
            continue
        times, statuses = [], defaultdict(int)
        for i in range(rounds):
            if i and i % (USER_QUERIES - 1) == 0:
                r.close()
                r = researcher()
            status, ms, body = r.ask(query)
            times.append(ms)
            for n in body.get("nodes", []):
                statuses[n["status"]] += 1
        r.close()
        out[kind] = {"supported": True, "n": len(times), "p50_ms": round(pct(times, 50), 1),
                     "p95_ms": round(pct(times, 95), 1), "node_statuses": dict(statuses)}
    return out


# ------------------------------------------------------------------------- report


def share(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f}%)" if b else "0/0"


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(r: dict) -> None:
    s = r["setup"]
    print(f"\nset-up: {s['institutions']} x {s['patients']:,} patients (seed {s['seed']}); "
          f"generation {s['generate_s']:.0f} s + sync {s['sync_s']:.0f} s"
          + (" (cached: not repeated this run)" if s["cached"] else "")
          + f"; servers up in {s['start_s']:.1f} s")
    print("  patients per ICD-10 category asked about (all sites): " + ", ".join(
        f"{code} {n:,}" for code, n in r["conditions"].items()))

    print("\n1. accuracy: |shown - true| / true of each count a node showed, by true size")
    print(f"  {'cells':>9} {'n':>6} {'mean':>8} {'p95':>8} {'max':>8} {'exact':>7}")
    for b in r["accuracy"]:
        print(f"  {b['bucket']:>9} {b['n']:>6} {fmt(b['mean']):>8} {fmt(b['p95']):>8} "
              f"{fmt(b['max']):>8} {fmt(b['exact_share']):>7}")
    worst = max((b["max"] for b in r["accuracy"][3:] if b["max"] is not None), default=None)
    print(f"  cells of 100+: max error {fmt(worst)} (target <= {100 * TARGET_ERROR_100:g}%: "
          + ("no such cells at this size)" if worst is None
             else f"{verdict(worst <= TARGET_ERROR_100)})"))

    u = r["utility"]
    print(f"\n2. utility: {u['questions']} stratified questions by one fresh researcher "
          f"({u['answered']} answered with HTTP 200)")
    print(f"  combined totals shown: {share(u['totals_shown'], u['totals'])}; with every "
          f"site's total in it: {share(u['totals_complete'], u['totals'])}")
    print(f"  combined cells shown:  {share(u['cells_shown'], u['cells'])}; with every "
          f"site's cell in it: {share(u['cells_complete'], u['cells'])}; of cells whose "
          f"true count is 10+: {share(u['cells_true_10_plus_shown'], u['cells_true_10_plus'])}")
    print(f"  each site's own cells shown: {share(u['node_cells_shown'], u['node_cells'])}")
    print(f"  answers touched by a differencing refusal: {u['differencing_touched']} of "
          f"{u['questions']}" + (f" (first: {'; '.join(u['differencing_examples'][:3])})"
                                 if u["differencing_examples"] else ""))
    for e in u["errors"][:3]:
        print(f"  error: {e}")
    tshare = u["totals_shown"] / u["totals"] if u["totals"] else 0
    cshare = u["cells_shown"] / u["cells"] if u["cells"] else 0
    print(f"  targets: totals >= {TARGET_TOTALS:.0%} {verdict(tshare >= TARGET_TOTALS)}, "
          f"cells >= {TARGET_CELLS:.0%} {verdict(cshare >= TARGET_CELLS)}, differencing 0 "
          f"{verdict(u['differencing_touched'] == 0)}")

    a = r["attack"]
    print(f"\n3. differencing campaign: {a['targets']} target groups, {a['queries']} queries "
          "by one fresh researcher (broad question, then the same excluding the group)")
    print(f"  exact recoveries (a difference of two totals declared exact, equal to the "
          f"group's true size 1-9): {a['exact_recoveries']} of {a['node_attempts']} at "
          f"nodes, {a['combined_exact_recoveries']} of {a['combined_attempts']} combined "
          f"(target 0: {verdict(a['exact_recoveries'] + a['combined_exact_recoveries'] == 0)})")
    print(f"  both totals shown at {share(a['both_totals_shown'], a['node_attempts'])} of "
          f"those nodes; right guesses (rounded or perturbed difference that happens to "
          f"equal the size): {share(a['right_guesses'], a['node_attempts'])}, combined "
          f"{share(a['combined_right_guesses'], a['combined_attempts'])}; chance baseline, "
          f"difference 0 for an empty group: "
          f"{share(a['empty_group_right_guesses'], a['empty_group_attempts'])}")
    print(f"  differencing refusals (an oracle if they depend on the group): at nodes with "
          f"1-9 in the group {share(a['differencing_refusals_group_1_9'], a['nodes_group_1_9'])}"
          f", with none {share(a['differencing_refusals_group_0'], a['nodes_group_0'])}")
    for e in a["examples"][:3]:
        print(f"  recovered: {e}")

    print(f"\n4. latency through the hub ({r['latency_rounds']} requests each after a "
          "warm-up; target p50 <= 100 ms)")
    for kind, x in r["latency"].items():
        if x["supported"]:
            print(f"  {kind:<12} p50 {x['p50_ms']:7.1f} ms   p95 {x['p95_ms']:7.1f} ms   "
                  f"{verdict(x['p50_ms'] <= TARGET_P50_MS)}   nodes {x['node_statuses']}")
        else:
            print(f"  {kind:<12} n/a (not supported)" if x["unknown_kind"] else
                  f"  {kind:<12} REFUSED: HTTP {x['status']} {x['detail'][:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000, help="per institution")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--questions", type=int, default=None,
                        help="ask only the first N of the 130 questions")
    parser.add_argument("--targets", type=int, default=40, help="groups attacked")
    parser.add_argument("--latency-rounds", type=int, default=50)
    parser.add_argument("--stat-queries", type=Path,
                        help="JSON {kind: query} replacing the statistics' example queries")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the synced federation is cached (var/bench-cache)")
    parser.add_argument("--refresh", action="store_true", help="regenerate the cache")
    args = parser.parse_args()

    cache = {"cache": args.cache} if args.cache else {}
    dbs, facts = demo_indexes(args.patients, args.seed, 3, refresh=args.refresh, **cache)
    qs = questions()[:args.questions]
    stat_queries = dict(STAT_QUERIES)
    if args.stat_queries:
        stat_queries |= json.loads(args.stat_queries.read_text())
    run = uuid.uuid4().hex[:6]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spe-bench-su-") as tmp:
        t = time.perf_counter()
        with Federation(Path(tmp), dbs) as fed:
            start_s = time.perf_counter() - t
            print(f"hub {fed.hub_url}; nodes " + ", ".join(fed.node_urls.values()))
            # True counts from the nodes' own (migrated) copies, read while they are idle.
            truth = Truth(fed.dbs)
            try:
                prevalence = {code: sum(len(ev.ids) for ev in truth.evaluate(
                    {"where": condition(code)}).values()) for code in CONDITIONS}
                targets = pick_targets(truth, args.targets)
                utility = run_questions(fed, truth, qs, f"researcher-{run}")
                attack = run_attack(fed, truth, targets, f"attacker-{run}")
            finally:
                truth.close()
            latency = run_latency(fed, args.latency_rounds, run, stat_queries)
    result = {
        "setup": {k: facts[k] for k in ("institutions", "patients", "seed", "generate_s",
                                        "sync_s", "instances", "cached")}
        | {"start_s": round(start_s, 1)},
        "conditions": prevalence,
        "accuracy": accuracy(utility.pop("_pairs")),
        "accuracy_combined": accuracy(utility.pop("_combined_pairs")),
        "utility": utility, "attack": attack, "latency": latency,
        "latency_rounds": args.latency_rounds,
        "seconds": round(time.perf_counter() - started, 1),
    }
    report(result)
    print(f"\n(measured in {result['seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
