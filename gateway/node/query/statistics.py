"""A node answering a federated statistic (mean, quantiles, histogram, table, correlation,
linear and logistic regression, survival): the cohort by the same language as the counts
(`evaluate`), each patient's values (`variables`), the summary the hub pools
(`spe.stats.summaries`), the per-statistic disclosure rules of policy
(`policies/disclosure` statistics_decision, `spe.stats.disclosure`) and the perturbation of
the statistics tier, the audit entry and the daily budget (`policies/query`).

What leaves is a summary (sums, counts, cross-products), never rows. In the statistics tier:
- every count shown (a node's n, a histogram's bin, a table's cell) goes the counts' way:
  under the counts' `min_count` it is suppressed with its reason, else shown as n plus its
  cell-key noise (`perturb.noise_for`: the same patients, the same value);
- continuous summaries (means, centred sums of squares, cross-products, a logistic model's
  score and information) are perturbed by `relative_noise` of policy, half by uniforms from
  the cohort's record keys and the statistic's name (`perturb.uniforms_for`), half by the
  same and the question's criteria (`Noise.signs`): the same question on the same patients
  gets the same numbers, however often it is asked; two wordings of the same patients get
  different numbers (else equal values would say that a target lacks the diagnosis a
  wording left her out by), and averaging over wordings leaves the set's half;
- quantiles are searched on values each moved by a fraction of the node's spread (by the
  patient's key, the statistic and the question), so no quantile is a patient's own value,
  and at ranks moved by up to QUANTILE_RANK_NOISE per node (by the cohort and the
  question), so two cohorts one patient apart do not say on which side of a quantile that
  patient lies;
- the per-statistic limits (min_n, min_level, min_tail, saturation) are met by counts as
  shown (`Noise.rule_n`, `Noise.at_least`), never by exact ones: a refusal decided on the
  exact n would tell whether a target is in a cohort one patient short of a limit;
- survival tables stop where fewer than `min_at_risk` patients remain at risk at the node.
The permit tier is exact.

Rounds: quantiles and logistic regression take several fan-outs, each answering the hub's
`Step` (counts at points, sums at coefficients) under the same rules. Only the first
(round 1, or no step) counts against the daily budget; the later ones reuse the first's
cohort, values and record keys, kept in memory for a short while (`_remember`).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from gateway.node.index.repository import index_version
from gateway.node.permits.facts import permit_facts
from gateway.node.query import repository
from gateway.node.query.evaluate import evaluate, matching_patients
from gateway.node.query.perturb import (
    CountPerturbation,
    cell_key,
    load_record_keys,
    uniforms_for,
)
from gateway.node.query.service import EXACT_TIERS, _Disclosure, criteria_digest
from gateway.node.query.variables import in_units, levels_of, survival_times, values
from spe.audit import AuditLog
from spe.errors import Forbidden, SPEError
from spe.policy import PolicyService
from spe.policy.disclosure import NoCountRule, StatisticsRule, count_rule, statistics_rule
from spe.policy.gate import audit_refusal, decide_or_refuse
from spe.stats import StatsError, logistic_fit, summaries
from spe.stats import disclosure as rules
from spe.wire.context import HubContext
from spe.wire.query import (
    BINARY,
    Cell,
    NodeAnswer,
    Query,
    SexVariable,
    Step,
    Variable,
    variable_name,
)


class StatisticRefused(Forbidden):
    """The node's policy refused to answer (budget, tier, role, no rule)."""

    error = "refused_by_policy"


class _NotShown(Exception):
    """A disclosure rule keeps the statistic at this node: the reason, for the researcher."""


# ---------------------------------------------------------------------------- noise


@dataclass
class Noise:
    """How this node shows what it computed, in this tier, for this question.

    `counts` shows a count as the counts' answers do (`service._Disclosure`: the same set
    asked by the same criteria gets the same value as a count query's); `keys` (the record
    keys, indexed by patient id) are None in an exact tier; `relative` is policy's
    relative_noise for continuous summaries (0: exact)."""

    counts: _Disclosure
    keys: np.ndarray | None
    relative: float
    salt: str  # names the statistic: the same cohort and salt, the same noise
    cache_key: str = ""  # the question and tier: a later round reuses the first's values

    @property
    def perturbs(self) -> bool:
        return self.keys is not None and (self.counts.perturbation is not None
                                          or self.relative > 0)

    def count(self, ids: np.ndarray, key: dict | None = None) -> dict:
        """A count shown the counts' way, as a Cell's dict: suppressed under the threshold
        (or pushed under it by its noise), else perturbed by the cell-key method in the
        statistics tier."""
        return self.counts.cell(json.dumps(key or {}), key or {}, ids).model_dump()

    def shown_n(self, ids: np.ndarray) -> int:
        """n as the summaries carry it: perturbed like a count in the statistics tier."""
        cell = self.count(ids)
        if cell["value"] is None:  # never the exact n instead
            raise _NotShown(f"the patients with these values: {cell['reason']}")
        return int(cell["value"])

    @property
    def question_salt(self) -> str:
        """The statistic's name with the question's criteria: the question's half."""
        return f"{self.salt}:question:{self.counts.question}"

    def halves(self, ids: np.ndarray, what: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k uniforms in [0, 1) keyed by the set and `what`, and k keyed by the set, `what`
        and the question's criteria."""
        return (uniforms_for(ids, self.keys, f"{self.salt}:{what}", k),
                uniforms_for(ids, self.keys, f"{self.question_salt}:{what}", k))

    def rule_n(self, ids: np.ndarray) -> int:
        """The count a disclosure rule (min_n, min_tail, saturation) compares
        with its limit: exact in an exact tier; where the tier perturbs counts, the count as
        it is shown (what `count` shows as the cohort's n), 0 where the counts' rule suppresses
        it, so a statistic describes no group a count would not show. A refusal decided on
        the exact count is an oracle: a bound moved a day at a time until the refusal flips
        finds the patient who tips it, and a cohort one patient short of the limit says by
        its refusal whether a target is in it."""
        d = self.counts
        if not self.perturbs or d.perturbation is None or d.record_keys is None:
            return len(ids)
        count = d.perturbation.count(ids, d.record_keys, f"{d.question}|{json.dumps({})}")
        return 0 if count is None else int(count)

    def at_least(self, ids: np.ndarray, limit: int, what: str) -> bool:
        """Whether a small group (a level of a yes/no variable) has `limit` patients: exact
        in an exact tier; where the tier perturbs, n + e >= limit + LEVEL_NOISE with e a
        whole number in [-LEVEL_NOISE, LEVEL_NOISE] keyed by the group and the question, so
        a group under the limit never passes, one of limit + 2 * LEVEL_NOISE always does,
        and in between the refusal is not the exact count's (as `rule_n` for counts)."""
        if not self.perturbs or self.keys is None:
            return len(ids) >= limit
        u = uniforms_for(ids, self.keys, f"{self.question_salt}:at-least:{what}", 1)
        e = int(math.floor(float(u[0]) * (2 * LEVEL_NOISE + 1))) - LEVEL_NOISE
        return len(ids) + e >= limit + LEVEL_NOISE

    def signs(self, ids: np.ndarray, what: str, k: int) -> np.ndarray:
        """k numbers in [-relative, relative), the same for the same set, question and
        `what`: half the set's, half the question's (see the module's docstring)."""
        if self.keys is None or self.relative <= 0 or k == 0:
            return np.zeros(k)
        u, v = self.halves(ids, what, k)
        return (u + v - 1.0) * self.relative


def _perturb_positive(m: np.ndarray, e: np.ndarray) -> np.ndarray:
    """A symmetric positive (semi)definite p x p matrix (cross products, information) moved
    in its correlation scale by the p x p numbers `e`, staying positive definite:
    S (I + E) R (I + E)' S, with R its correlations and S its standard deviations. Moving
    each entry by its own factor instead breaks definiteness where variables are strongly
    correlated (age and the intercept: the fit then fails or gives no standard errors)."""
    p = m.shape[0]
    d = np.sqrt(np.maximum(np.diag(m), 0.0))
    scale = np.where(d > 0, d, 1.0)
    r = m / np.outer(scale, scale)
    a = np.eye(p) + e.reshape(p, p)
    out = (a @ r @ a.T) * np.outer(d, d)
    return (out + out.T) / 2


def _perturb_moments(m: dict, ids: np.ndarray, noise: Noise) -> dict:
    if not noise.perturbs or m["n"] < 2:
        return m
    n, n2 = m["n"], noise.shown_n(ids)
    mean = m["sum"] / n
    sd = math.sqrt(m["m2"] / (n - 1))
    e = noise.signs(ids, "moments", 2)
    mean2 = mean + e[0] * sd
    m2 = m["m2"] * (n2 - 1) / (n - 1) * (1.0 + e[1])
    return {"n": n2, "sum": n2 * mean2, "sumsq": m2 + n2 * mean2 * mean2, "m2": m2}


def _perturb_cross(cp: dict, ids: np.ndarray, noise: Noise) -> dict:
    if not noise.perturbs or cp["n"] < 2:
        return cp
    n, n2 = cp["n"], noise.shown_n(ids)
    mean = np.asarray(cp["mean"])
    cxx = np.asarray(cp["cxx"])
    p = len(mean)
    sd = np.sqrt(np.maximum(np.diag(cxx), 0.0) / (n - 1))
    e = noise.signs(ids, "cross", p + p * p)
    mean2 = mean + e[:p] * sd  # a constant column (the intercept) stays as it is
    cxx2 = _perturb_positive(cxx, e[p:]) * (n2 - 1) / (n - 1)
    return {"n": n2, "sum": (n2 * mean2).tolist(),
            "xtx": (cxx2 + n2 * np.outer(mean2, mean2)).tolist(),
            "mean": mean2.tolist(), "cxx": cxx2.tolist()}


def _perturb_terms(t: dict, ids: np.ndarray, noise: Noise) -> dict:
    if not noise.perturbs:
        return t
    g = np.asarray(t["gradient"])
    h = np.asarray(t["hessian"])
    p = len(g)
    # The same numbers every round (not per round: the Newton steps would never settle).
    # The score moves by a fraction of its own standard deviation (the information's
    # diagonal): the fit moves by about that fraction of its standard errors.
    e = noise.signs(ids, "logistic", p + p * p + 1)
    return {"n": noise.shown_n(ids),
            "gradient": (g + e[:p] * np.sqrt(np.maximum(np.diag(h), 0.0))).tolist(),
            "hessian": _perturb_positive(h, e[p:-1]).tolist(),
            "deviance": t["deviance"] * (1.0 + e[-1])}


def _jittered(x: np.ndarray, ids: np.ndarray, noise: Noise) -> np.ndarray:
    """Each value moved by up to `relative` of the node's SD, by its own patient's key: half
    by the statistic, half by the question too (as `Noise.signs`)."""
    if not noise.perturbs or len(x) < 2 or noise.relative <= 0:
        return x
    sd = float(np.std(x, ddof=1))
    u, v = (_keyed_uniforms(noise.keys[ids], f"{salt}:jitter")
            for salt in (noise.salt, noise.question_salt))
    return x + (u + v - 1.0) * noise.relative * sd


# ---------------------------------------------------------------------------- rounds' cache
# A statistic in rounds asks the node again within seconds about the same cohort and
# variables: their values are kept here (in the node's memory only, never sent) for
# `_KEPT_SECONDS`, so a round costs the summary alone, not the SQL again.

_PREPARED: OrderedDict[str, tuple[float, object]] = OrderedDict()
_KEPT = 32  # two per statistic in rounds: its cohort and its values
_KEPT_SECONDS = 120.0
_prepared_lock = threading.Lock()


def _remember(key: str, make: Callable[[], object]) -> object:
    now = time.monotonic()
    with _prepared_lock:
        hit = _PREPARED.get(key)
        if hit is not None and now - hit[0] <= _KEPT_SECONDS:
            _PREPARED.move_to_end(key)
            return hit[1]
    value = make()  # raises _NotShown as before: nothing kept
    with _prepared_lock:
        _PREPARED[key] = (now, value)
        while len(_PREPARED) > _KEPT:
            _PREPARED.popitem(last=False)
    return value


# ---------------------------------------------------------------------------- per kind


@dataclass
class _Out:
    n: dict  # the count cell of the patients the statistic is about
    statistic: dict | None
    notes: list[str] = field(default_factory=list)
    exact_n: int = 0  # for the audit only


def _refuse_if(reason: str | None) -> None:
    if reason:
        raise _NotShown(reason)


def _complete(session: Session, vs: list[Variable], ids: np.ndarray, cohort, today: date
              ) -> tuple[np.ndarray, np.ndarray]:
    """The cohort's patients with a value of every variable, and their values (n x k)."""
    cols = [values(session, v, ids, cohort, today=today) for v in vs]
    x = np.column_stack(cols) if cols else np.zeros((len(ids), 0))
    keep = ~np.isnan(x).any(axis=1)
    return ids[keep], x[keep]


def _levels_ok(v: Variable, x: np.ndarray, kept: np.ndarray, rule: StatisticsRule,
               noise: Noise) -> None:
    """A yes/no variable needs min_level patients in each of its two values here (as
    `Noise.at_least` counts them)."""
    if isinstance(v, BINARY) and not _levels_have(variable_name(v), x, kept, rule, noise):
        which = ("female or male" if isinstance(v, SexVariable) else "with or without it")
        raise _NotShown(f"{variable_name(v)}: fewer than {rule.min_level} patients "
                        f"{which} at this site; a statistic would describe them alone: "
                        "widen the cohort or leave the variable out")


def _levels_have(name: str, x: np.ndarray, kept: np.ndarray, rule: StatisticsRule,
                 noise: Noise) -> bool:
    """Both the patients with value 1 and the others number min_level (`Noise.at_least`)."""
    ones = x == 1
    return (noise.at_least(kept[ones], rule.min_level, f"{name}:1")
            and noise.at_least(kept[~ones], rule.min_level, f"{name}:0"))


def _min_n(kept: np.ndarray, noise: Noise, rule: StatisticsRule, what: str) -> int:
    """At least min_n patients here, counted as `Noise.rule_n` counts; that count."""
    n = noise.rule_n(kept)
    if n < max(rule.min_n, 1):
        raise _NotShown(f"fewer than {max(rule.min_n, 1)} patients of the cohort at this "
                        f"site have {what}; widen the cohort or choose a variable recorded "
                        "for more patients")
    return n


def _mean(session, query, ids, cohort, today, rule, noise, step) -> _Out:
    v = query.answer.variable
    kept, x = _complete(session, [v], ids, cohort, today)
    _min_n(kept, noise, rule, f"a value of {variable_name(v)}")
    m = summaries.moments(x[:, 0])
    return _Out(noise.count(kept), _perturb_moments(m, kept, noise), exact_n=len(kept))


def _quantiles(session, query, ids, cohort, today, rule, noise, step) -> _Out:
    v = query.answer.variable

    def prepare() -> tuple[np.ndarray, np.ndarray]:
        kept, x = _complete(session, [v], ids, cohort, today)
        n = _min_n(kept, noise, rule, f"a value of {variable_name(v)}")
        extreme = [p for p in query.answer.quantile_probabilities()
                   if n * min(p, 1 - p) < rule.min_tail]
        if extreme:
            raise _NotShown(
                f"the quantile(s) {', '.join(f'{p:g}' for p in extreme)} lie among the "
                f"{rule.min_tail} most extreme values at this site (one patient's value): "
                "ask for probabilities nearer 0.5, or widen the cohort")
        return kept, np.sort(_jittered(x[:, 0], kept, noise))

    kept, values_ = _remember(noise.cache_key, prepare)
    n = len(kept)
    out = _Out(noise.count(kept), {"n": n}, exact_n=n)
    if noise.perturbs:
        out.statistic["rank_offset"] = _rank_offset(kept, noise)
    if step is not None:
        if not step.points:
            raise _NotShown("a quantile round needs its points")
        out.statistic["counts"] = summaries.counts_at_or_below(values_, step.points)
    return out


#: Where the nodes perturb, a small group's limit (min_level) is met by n + e >= limit +
#: LEVEL_NOISE, e in [-LEVEL_NOISE, LEVEL_NOISE] (`Noise.at_least`).
LEVEL_NOISE = 3

#: Where the nodes perturb, each moves the ranks of the pooled quantiles by up to this many
#: (half by the cohort, half by the question).
QUANTILE_RANK_NOISE = 2


def _rank_offset(kept: np.ndarray, noise: Noise) -> int:
    """This node's share of the shift of every quantile's rank, drawn from the whole
    cohort's record keys and the question: one patient more or less in the cohort moves a
    quantile by one rank, and without this two answers would tell on which side of it that
    patient's value lies (asked at many probabilities, where it lies); with it the rank
    moves by several, differently for the two cohorts. The same question gets the same
    shift."""
    half = QUANTILE_RANK_NOISE // 2
    u, v = noise.halves(kept, "rank", 1)
    return sum(int(math.floor(float(w[0]) * (2 * half + 1))) - half for w in (u, v))


def _bins_of(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's bin as numpy.histogram puts it ([e0, e1), ..., [e_k-1, e_k]); -1 out."""
    k = len(edges) - 1
    idx = np.searchsorted(edges, x, side="right") - 1
    idx[x == edges[-1]] = k - 1
    idx[(x < edges[0]) | (x > edges[-1])] = -1
    return idx


def _histogram(session, query, ids, cohort, today, rule, noise, step) -> _Out:
    v = query.answer.variable
    kept, x = _complete(session, [v], ids, cohort, today)
    _min_n(kept, noise, rule, f"a value of {variable_name(v)}")
    edges = np.asarray(query.answer.histogram_edges(), dtype=float)
    idx = _bins_of(x[:, 0], edges)
    counts = summaries.histogram(x[:, 0], edges)
    cells = [noise.count(kept[idx == j], {"bin": str(j)}) for j in range(len(edges) - 1)]
    assert [int(np.count_nonzero(idx == j)) for j in range(len(counts))] == counts
    outside = noise.count(kept[idx < 0])
    return _Out(noise.count(kept), {"edges": edges.tolist(), "counts": cells,
                                    "outside": outside}, exact_n=len(kept))


def _table(session, query, ids, cohort, today, rule, noise, step) -> _Out:
    rv, cv = query.answer.variables
    kept, x = _complete(session, [rv, cv], ids, cohort, today)
    n = _min_n(kept, noise, rule, f"values of {variable_name(rv)} and {variable_name(cv)}")
    row_levels, rows = levels_of(rv, x[:, 0])
    col_levels, cols = levels_of(cv, x[:, 1])
    for v, lv in ((rv, row_levels), (cv, col_levels)):
        why = rules.levels(len(lv), n, max_levels=rule.max_levels, max_density=1.0)
        _refuse_if(why and f"{variable_name(v)}: {why}")
    counts = summaries.contingency(rows, cols, row_levels, col_levels)
    r_arr, c_arr = np.asarray(rows, dtype=object), np.asarray(cols, dtype=object)
    cells = []
    for i, a in enumerate(row_levels):
        for j, b in enumerate(col_levels):
            members = kept[(r_arr == a) & (c_arr == b)]
            assert len(members) == counts[i][j]
            cells.append(noise.count(members, {"row": a, "col": b}))
    return _Out(noise.count(kept), {"row_levels": row_levels, "col_levels": col_levels,
                                    "cells": cells}, exact_n=len(kept))


def _correlation(session, query, ids, cohort, today, rule, noise, step) -> _Out:
    vs = query.answer.variables
    kept, x = _complete(session, vs, ids, cohort, today)
    _min_n(kept, noise, rule, "a value of every variable")
    for j, v in enumerate(vs):
        _levels_ok(v, x[:, j], kept, rule, noise)
    cp = summaries.cross_products(x)
    return _Out(noise.count(kept), _perturb_cross(cp, kept, noise), exact_n=len(kept))


def _design(session, query, ids, cohort, today, rule, noise
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = query.answer
    kept, x = _complete(session, [*a.predictors, a.outcome], ids, cohort, today)
    n = _min_n(kept, noise, rule, "a value of the outcome and every predictor")
    for j, v in enumerate([*a.predictors, a.outcome]):
        _levels_ok(v, x[:, j], kept, rule, noise)
    p = len(a.predictors) + 1
    _refuse_if(rules.saturation(n, p, min_per_parameter=rule.min_n_per_parameter))
    if n - p < rule.min_n:
        raise _NotShown(f"{p} parameters leave fewer than {rule.min_n} residual degrees of "
                        "freedom at this site (a saturated model): drop predictors or "
                        "widen the cohort")
    design = np.column_stack([np.ones(len(kept)), x[:, :-1]])
    return kept, design, x[:, -1]


def _linear(session, query, ids, cohort, today, rule, noise, step) -> _Out:
    kept, design, y = _design(session, query, ids, cohort, today, rule, noise)
    cp = summaries.cross_products(np.column_stack([design, y]))
    return _Out(noise.count(kept), _perturb_cross(cp, kept, noise), exact_n=len(kept))


def _logistic(session, query, ids, cohort, today, rule, noise, step) -> _Out:
    def prepare() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        kept, design, y = _design(session, query, ids, cohort, today, rule, noise)
        if noise.perturbs:  # the classes counted as shown (Noise.rule_n), no count said
            if not _levels_have("outcome", y, kept, rule, noise):
                raise _NotShown(f"the outcome has fewer than {rule.min_level} patients in one "
                                "of its two values at this site; at least "
                                f"{rule.min_level} are needed in each")
        else:
            _refuse_if(rules.binary_outcome(y, min_per_class=rule.min_level))
        return kept, design, y

    kept, design, y = _remember(noise.cache_key, prepare)
    out = _Out(noise.count(kept), {"n": noise.shown_n(kept)}, exact_n=len(kept))
    if step is not None:
        if step.beta is None or len(step.beta) != design.shape[1]:
            raise _NotShown(f"a logistic round needs {design.shape[1]} coefficients")
        terms = summaries.logistic_terms(design, y, step.beta)
        out.statistic = _perturb_terms(terms, kept, noise)
        if step.round == 1:
            out.statistic["local"] = _own_fit(design, y, kept, noise)
    return out


def _own_fit(design: np.ndarray, y: np.ndarray, kept: np.ndarray, noise: Noise
             ) -> dict | None:
    """This node's own fit, on the sums it would send (perturbed alike): the hub starts its
    Newton rounds from the information-weighted mean of the nodes' fits (`logistic_start`),
    two or three rounds from the pooled fit instead of five to ten from 0. None where the
    node's own data do not fit (separated, collinear): the hub then starts from 0."""
    def terms(beta: np.ndarray) -> list[dict]:
        return [_perturb_terms(summaries.logistic_terms(design, y, beta), kept, noise)]

    try:
        fit = logistic_fit(terms, [str(j) for j in range(design.shape[1])],
                           design.shape[1], 25, 1e-8)
    except (StatsError, ValueError, FloatingPointError):
        return None
    if not fit["converged"]:
        return None
    return {"beta": [c["estimate"] for c in fit["coefficients"]],
            "information": fit["information"]}


#: Where the nodes perturb: each patient's survival time moves by up to this many units.
SURVIVAL_JITTER = 2


def _cohort_uniforms(ids: np.ndarray, noise: Noise, salt: str, *, question: bool = False
                     ) -> np.ndarray:
    """One uniform in [0, 1) per patient of `ids`, from the patient's record key and the
    whole cohort's cell key (and the question's criteria, with `question`): the same cohort
    gives every patient the same number, a cohort one patient apart gives everyone another
    (so two answers cannot be lined up row by row to find the patient in which they
    differ)."""
    base = noise.question_salt if question else noise.salt
    return _keyed_uniforms(noise.keys[ids],
                           f"{cell_key(ids, noise.keys)}:{len(ids)}:{base}:{salt}")


def _keyed_uniforms(record_keys: np.ndarray, seed: str) -> np.ndarray:
    """One uniform in [0, 1) per record key, the same for the same key and `seed` (a
    SplitMix64 finaliser of the key and the seed's hash: vectorised, where a hash per
    patient would cost a query of 10,000 patients some 30 ms)."""
    s = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    with np.errstate(over="ignore"):
        x = record_keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(s)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


def _perturbed_rows(t: np.ndarray, event: np.ndarray, ids: np.ndarray, noise: Noise
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The survival rows as the statistics tier sends them, so that neither the table nor
    its sums say anything exact: as many rows as the cohort's shown (cell-key) n, patients
    left out or repeated to get there; as many events as the shown count of the patients
    with the end event, censorings turned into events or back; every time moved by up to
    SURVIVAL_JITTER units. All of it is drawn from the record keys and the whole cohort, so
    the same question gets the same curve, and one patient more or less moves every row."""
    n2 = noise.shown_n(ids)
    events = noise.count(ids[event], {"survival": "events"})
    if events["suppressed"]:
        raise _NotShown(f"the patients with the end event: {events['reason']}")
    u = _cohort_uniforms(ids, noise, "rows")
    order = np.argsort(u, kind="stable")
    if n2 <= len(ids):
        rows = np.sort(order[len(ids) - n2:])
    else:
        rows = np.concatenate([np.arange(len(ids)), order[len(ids) - (n2 - len(ids)):]])
    t2, e2 = t[rows].copy(), event[rows].copy()
    flip = _cohort_uniforms(ids, noise, "events")[rows]
    gap = int(events["value"]) - int(e2.sum())
    candidates = np.flatnonzero(~e2 if gap > 0 else e2)
    chosen = candidates[np.argsort(flip[candidates], kind="stable")[:abs(gap)]]
    e2[chosen] = ~e2[chosen]
    # Half the move by the cohort, half by the question too: two wordings of the same
    # patients do not give the same table (which would say the wordings' sets are equal).
    half = SURVIVAL_JITTER // 2
    shift = sum(np.floor(_cohort_uniforms(ids, noise, "times", question=q)[rows]
                         * (2 * half + 1)) - half for q in (False, True))
    return np.maximum(t2 + shift, 0.0), e2


def _survival(session, query, ids, cohort, today, rule, noise, step) -> _Out:
    a = query.answer
    if a.unit not in rule.units:
        raise _NotShown(f"survival times in {a.unit}s are not given in this tier (they "
                        f"would date single events): ask in {' or '.join(rule.units)}s")
    times = survival_times(session, a.start, a.end, cohort)
    _min_n(times.ids, noise, rule, "the start event")
    t = in_units(times.days.astype(float), a.unit)
    event = times.event.astype(bool)
    notes = []
    if noise.perturbs:
        t, event = _perturbed_rows(t, event, times.ids, noise)
        # Said whether or not any were: that one was would tell of a patient.
        notes.append("patients whose end event came before their start event, if any, are "
                     f"left out; times are moved by up to {SURVIVAL_JITTER} {a.unit}s and "
                     "the numbers at risk and of events are perturbed (cell-key method)")
    elif times.ended_before:
        notes.append("patients whose end event came before their start event are left out")
    table = summaries.km_table(t, event.astype(float))
    # Steps where fewer than min_at_risk remain at risk here are not sent: the rest are
    # censored at the first such time, and the hub stops the curve there.
    ts = np.asarray(table["times"])
    ev = np.asarray(table["events"], dtype=np.int64)
    ce = np.asarray(table["censored"], dtype=np.int64)
    at_risk = len(t) - np.concatenate([[0], np.cumsum(ev + ce)[:-1]])
    low = np.flatnonzero(at_risk < rule.min_at_risk)
    cut = None
    if len(low):
        i = int(low[0])
        cut = float(ts[i])
        rest = int(ev[i:].sum() + ce[i:].sum())
        table = {"times": [*ts[:i].tolist(), cut], "events": [*ev[:i].tolist(), 0],
                 "censored": [*ce[:i].tolist(), rest]}
    return _Out(noise.count(times.ids), {**table, "cut": cut}, notes, exact_n=len(times.ids))


KINDS = {"mean": _mean, "quantiles": _quantiles, "histogram": _histogram, "table": _table,
         "correlation": _correlation, "linear": _linear, "logistic": _logistic,
         "survival": _survival}


# ---------------------------------------------------------------------------- the answer


def _salt(query: Query) -> str:
    """The statistic's name for its noise: the answer asked for (not the cohort, which the
    record keys stand for)."""
    body = json.dumps(query.answer.model_dump(mode="json", exclude_none=True),
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def answer(
    session: Session,
    query: Query,
    ctx: HubContext,
    *,
    node_id: str,
    policy: PolicyService,
    audit: AuditLog,
    sessions: sessionmaker[Session],
    secret: bytes | None,
    step: Step | None = None,
    today: date | None = None,
    query_hash: str | None = None,
    subject: str | None = None,
) -> NodeAnswer:
    """The node's answer to statistic `query` (round `step`, None for the first).
    `secret`: the record keys' secret (`perturb.NodeSecret.get()`), needed when the tier
    perturbs. `subject`: what the hub's context named (the round's digest)."""
    now = datetime.now(UTC)
    today = today or date.today()
    query_hash = query_hash or query.digest()
    subject = subject or query_hash
    kind = query.answer.kind
    details = {"tier": ctx.tier, "kind": kind, "round": step.round if step else 0}
    used = repository.answered_since(session, ctx.sub, now.replace(
        hour=0, minute=0, second=0, microsecond=0))
    # A later round belongs to a statistic its first round counted already.
    later = step is not None and step.round > 1
    decision = decide_or_refuse(policy, "query/node_decision", {
        "tier": ctx.tier, "roles": ctx.roles, "kind": kind,
        "used_today": max(used - 1, 0) if later else used,
        "permit": permit_facts(session, ctx, now.date())},
        audit=audit, sessions=sessions, session=None, actor=ctx.sub, action="query",
        object=subject, details=details, refuse=lambda d: StatisticRefused(d.reason))

    def refuse(reason: str) -> SPEError:
        return audit_refusal(audit, sessions, StatisticRefused(reason), actor=ctx.sub,
                             action="query", object=subject, details=details)

    try:
        counts = count_rule(policy, ctx.tier, "query_count")
        rule = statistics_rule(policy, ctx.tier, kind)
        perturbation = (None if counts.perturbation is None else
                        CountPerturbation.from_policy(counts.perturbation.as_params(),
                                                      counts.min_count))
    except (NoCountRule, ValueError) as exc:
        raise refuse(str(exc)) from None
    if ctx.tier not in EXACT_TIERS and (perturbation is None or rule.relative_noise <= 0):
        # Fail closed, as the counts: exact statistics would single out small groups.
        raise refuse(f"denied: the disclosure policy gives no perturbation for statistics "
                     f"in tier {ctx.tier}")
    if ctx.tier not in EXACT_TIERS and secret is None:
        raise refuse("denied: this node has no record-key secret to perturb with")
    # The node and its database too: nodes may share a process (tests). The index's
    # version: a sync between rounds is not mixed with them.
    cache_key = (f"{node_id}:{session.get_bind().url}:{index_version(session)}:"
                 f"{ctx.tier}:{ctx.permit}:{today}:{query_hash}")

    def cohort_and_keys() -> tuple[np.ndarray, np.ndarray | None]:
        ids = evaluate(session, Query(where=query.where), node_id=node_id, today=today).ids
        return ids, (None if ctx.tier in EXACT_TIERS else load_record_keys(session, secret))

    # A statistic in rounds asks about the same cohort each round: found once.
    ids, keys = (_remember(f"{cache_key}:cohort", cohort_and_keys) if step is not None
                 else cohort_and_keys())
    noise = Noise(_Disclosure(counts.min_count, counts.rounding, perturbation, keys,
                              criteria_digest(query)),
                  keys, rule.relative_noise, _salt(query), cache_key=cache_key)
    cohort = matching_patients(query.where, today=today)
    out = NodeAnswer(node_id=node_id, tier=ctx.tier, kind=kind, threshold=counts.min_count,
                     rounding=counts.rounding)
    try:
        result = KINDS[kind](session, query, ids, cohort, today, rule, noise, step)
        if result.n["suppressed"]:
            # Too few (with its noise) to show how many: then nothing about them either.
            raise _NotShown(f"the patients with these values: {result.n['reason']}")
    except _NotShown as exc:
        out.notes = [str(exc)]
        out.total = Cell(value=None, suppressed=True)
        exact_n = None
    else:
        out.statistic = result.statistic
        if out.statistic is not None:
            out.statistic["perturbed"] = noise.perturbs
        out.notes = result.notes
        out.total = Cell.model_validate(result.n)
        if noise.perturbs:
            out.notes.append(f"perturbed: counts by the cell-key method, continuous "
                             f"summaries by up to {rule.relative_noise:.0%} (the same "
                             "for the same question)")
        exact_n = result.exact_n

    if not later:  # the statistic counts once against the daily budget
        repository.record(session, [{"user_id": ctx.sub, "at": now, "query_hash": query_hash,
                                     "cell": "", "size": len(ids), "shown": False,
                                     "bitmap": b""}])
    audit.record(session, actor=ctx.sub, action="query", object=subject, decision="allow",
                 reason=decision.reason,
                 details={**details, "permit": ctx.permit, "query": query_hash,
                          "n": exact_n, "shown_n": out.total.value,
                          "not_shown": None if out.statistic is not None else out.notes})
    return out


__all__ = ["KINDS", "Noise", "StatisticRefused", "answer"]
