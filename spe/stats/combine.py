"""Hub side: the nodes' aggregates (from `spe.stats.summaries`) -> the pooled statistic.

Every function here returns what the same statistic computed on the union of the nodes'
rows returns (numpy, statsmodels, lifelines), to rounding (tests/spe/test_stats_exact.py
checks 1e-9 relative), from aggregates only. Results are JSON-able: numbers are floats or
ints, and a value that does not exist (the SD of one value, say) is None, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _dist

__all__ = [
    "QuantileSearch",
    "StatsError",
    "kaplan_meier",
    "linear_fit",
    "logistic_fit",
    "logistic_start",
    "pooled_correlation",
    "pooled_histogram",
    "pooled_mean_sd",
    "pooled_table",
    "quantile_rank",
]


class StatsError(ValueError):
    """The statistic cannot be computed from these aggregates (a singular design, parts of
    different shapes); the message says why, for the researcher."""


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# --- mean, SD -------------------------------------------------------------------------------


def pooled_mean_sd(parts: Sequence[dict], *, level: float = 0.95) -> dict:
    """Pooled count, mean, SD (ddof=1) and t-based confidence interval of the mean.

    `parts` are `summaries.moments` results. The spread is pooled from the nodes' centred
    sums of squares (m2) by Chan et al.'s update, M2 = sum m2_i + sum n_i (mean_i - mean)^2,
    or from sum and sum of squares where a part has no "m2". Returns
    {"n", "mean", "sd", "ci": [lo, hi]}: mean None for n = 0, sd and ci None for n < 2.
    """
    parts = [p for p in parts if int(p["n"]) > 0]
    n = sum(int(p["n"]) for p in parts)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci": None}
    mean = math.fsum(float(p["sum"]) for p in parts) / n
    if all("m2" in p for p in parts):
        m2 = math.fsum(
            float(p["m2"]) + int(p["n"]) * (float(p["sum"]) / int(p["n"]) - mean) ** 2
            for p in parts
        )
    else:
        m2 = math.fsum(float(p["sumsq"]) for p in parts) - n * mean * mean
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "ci": None}
    sd = math.sqrt(max(m2, 0.0) / (n - 1))
    half = float(_dist.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci": [mean - half, mean + half]}


# --- quantiles ------------------------------------------------------------------------------

_KEY_INF = int(np.array(np.inf).view(np.int64))


def _key(x: float) -> int:
    """The position of float x on the line of all doubles (a monotone integer; -0 == +0)."""
    if x == 0.0:
        return 0
    bits = int(np.array(abs(x), dtype=np.float64).view(np.int64))
    return bits if x > 0 else -bits


def _unkey(k: int) -> float:
    v = float(np.array(abs(k), dtype=np.int64).view(np.float64))
    return v if k >= 0 else -v


def quantile_rank(n: int, p: float) -> int:
    """The 1-based rank of the order statistic `numpy.quantile(x, p, method="inverted_cdf")`
    returns for n values, with numpy's own floating-point arithmetic (ceil(n p), at least 1)."""
    index = n * p - 1.0
    below = math.floor(index)
    j = below if index - below == 0 else below + 1
    return int(min(max(j, 0), n - 1)) + 1


def _round_numbers(lo: float, hi: float, limit: int = 9) -> list[float]:
    """The roundest decimals in the open interval (lo, hi): 0 if inside, else the multiples
    of each power of ten from the largest that has any there down to the last with at most
    `limit` of them. Data are often integers or a few decimals; asking exactly at such a
    value and at the double just below it pins a quantile that sits on one, rounds before
    the grid alone would."""
    if lo < 0.0 < hi:
        return [0.0]
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo <= 0:
        return []
    out: set[float] = set()
    e = min(math.floor(math.log10(max(abs(lo), abs(hi)))) + 1, 308)
    while e > -320:
        first, last = math.floor(lo / 10.0**e) + 1, math.floor(hi / 10.0**e)
        if last - first + 1 > limit:
            break
        out.update(float(m * 10**e) if e >= 0 else m / 10 ** (-e) for m in range(first, last + 1))
        e -= 1
    return sorted(v for v in out if lo < v < hi)


class QuantileSearch:
    """Pooled quantiles from counts alone: multisection on the value axis.

    Each round asks every node `summaries.counts_at_or_below(x, search.thresholds())`; the
    hub sums the nodes' lists and calls `search.update(total_counts, n)` with n the pooled
    number of values (the same every round). The target of probability p is the value of
    rank k = ceil(n p) (`quantile_rank`), which is what
    `numpy.quantile(pooled, p, method="inverted_cdf")` returns. After each round, every target
    lies in a bracket (lo, hi] between two asked thresholds with count(<= lo) < k <= count(<= hi).

    A round places, in each open bracket, `grid` thresholds:
      - evenly in value once the bracket lies within a factor of 2 of one magnitude (shrinks
        it (grid + 1)-fold per round);
      - otherwise half evenly in value and half evenly on the line of doubles (geometric in
        value: fast toward 0 and toward an unbounded side when the data lie outside [lo, hi]);
      - every double in it, once there are at most `grid` (the next round is exact);
      - plus the roundest decimals in it and the double just below each (`_round_numbers`).
    The first round searches [lo, hi] (both ends asked too); data outside it are still found
    (the bracket then has an infinite end, searched on the line of doubles).

    Stopping rule: a target is resolved when its bracket is two adjacent doubles (the value is
    hi, exactly) or hi - lo <= rtol * max(|lo|, |hi|) (the value is hi, within rtol). `done` is
    true when every target is resolved, or after `max_rounds` rounds (values() then gives the
    upper ends, `resolved` says which are not). Rounds measured (3,000 values, 5
    probabilities; grid 64 / 32): continuous values around 50 searched on [0, 120] or
    [0, 1000], 8 / 9-10; integers, 2; two decimals, 4 / 5; all values outside [lo, hi],
    10 / 12. A quantile exactly 0 is pinned in 2.
    Each round asks, per node, counts at up to about len(probabilities) * (grid + 18)
    thresholds (80 per probability measured, grid 64): the caller applies the count rules.
    """

    def __init__(
        self,
        probabilities: Sequence[float],
        lo: float,
        hi: float,
        grid: int = 64,
        *,
        rtol: float = 1e-12,
        max_rounds: int = 16,
    ) -> None:
        ps = [float(p) for p in probabilities]
        if not ps or any(not 0.0 <= p <= 1.0 for p in ps):
            raise ValueError("probabilities must be between 0 and 1")
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError("lo and hi must be finite with lo <= hi")
        if grid < 2:
            raise ValueError("grid must be at least 2")
        self.probabilities = ps
        self.grid = int(grid)
        self.rtol = float(rtol)
        self.max_rounds = int(max_rounds)
        self.rounds = 0
        self.n: int | None = None
        #: Added to every target's rank (then kept within 1..n); 0: numpy's quantiles. Set
        #: before the first `update` (the statistics tier's ranks are perturbed).
        self.rank_offset = 0
        self._start = (_unkey(_key(lo) - 1), hi)
        self._known: dict[float, int] = {}
        self._asked: list[float] = []

    # brackets ----------------------------------------------------------------------------
    def _brackets(self) -> list[tuple[float, float]]:
        """(lo, hi] per probability from every count known so far (needs n)."""
        assert self.n is not None
        ts = np.array(sorted(self._known))
        cs = np.array([self._known[t] for t in ts], dtype=np.int64)
        out = []
        for p in self.probabilities:
            k = min(max(quantile_rank(self.n, p) + self.rank_offset, 1), max(self.n, 1))
            i = int(np.searchsorted(cs, k, side="left"))
            lo = float(ts[i - 1]) if i > 0 else -math.inf
            hi = float(ts[i]) if i < ts.size else math.inf
            out.append((lo, hi))
        return out

    def _is_resolved(self, lo: float, hi: float) -> bool:
        if not math.isfinite(hi):
            return False
        if _key(hi) - _key(lo) <= 1:
            return True
        return math.isfinite(lo) and hi - lo <= self.rtol * max(abs(lo), abs(hi))

    def _grid(self, lo: float, hi: float) -> list[float]:
        klo, khi = _key(lo), _key(hi)
        g = self.grid
        if khi - klo - 1 <= g:
            return [_unkey(k) for k in range(klo + 1, khi)]
        finite = math.isfinite(lo) and math.isfinite(hi)
        one_magnitude = finite and lo * hi > 0 and max(abs(lo), abs(hi)) <= 2 * min(abs(lo),
                                                                                     abs(hi))
        n_value = g if one_magnitude else (g // 2 if finite else 0)
        n_key = g - n_value
        f = np.arange(1, n_value + 1) / (n_value + 1)
        points = (lo * (1 - f) + hi * f).tolist()
        points += [_unkey(klo + (khi - klo) * j // (n_key + 1)) for j in range(1, n_key + 1)]
        for v in _round_numbers(lo, hi):
            points += [v, _unkey(_key(v) - 1)]
        return points

    # the protocol ------------------------------------------------------------------------
    @property
    def resolved(self) -> list[bool]:
        if self.n is None:
            return [False] * len(self.probabilities)
        if self.n == 0:
            return [True] * len(self.probabilities)
        return [self._is_resolved(lo, hi) for lo, hi in self._brackets()]

    @property
    def done(self) -> bool:
        return self.rounds >= self.max_rounds or all(self.resolved)

    def thresholds(self) -> list[float]:
        """The thresholds to ask every node about this round (ascending, finite)."""
        if self.done:
            return []
        if self.n is None:
            lo, hi = self._start
            wanted = [lo, hi, *self._grid(lo, hi)]
        else:
            wanted = []
            for (lo, hi), ok in zip(self._brackets(), self.resolved, strict=True):
                if not ok:
                    wanted += self._grid(lo, hi)
        pts = {float(t) for t in wanted if math.isfinite(t)}
        self._asked = sorted(t for t in pts if t not in self._known)
        return list(self._asked)

    def update(self, counts_total: Sequence[int], n: int) -> None:
        """Record the pooled counts at this round's thresholds (in their order)."""
        counts = [int(c) for c in counts_total]
        if len(counts) != len(self._asked):
            raise StatsError("one count per threshold is needed")
        if self.n is not None and int(n) != self.n:
            raise StatsError("the number of values changed between rounds")
        self.n = int(n)
        self._known.update(zip(self._asked, counts, strict=True))
        cs = [self._known[t] for t in sorted(self._known)]
        if any(c < 0 or c > self.n for c in cs) or np.any(np.diff(cs) < 0):
            raise StatsError("the counts are not those of one set of values")
        self._asked = []
        self.rounds += 1

    def values(self) -> list[float | None]:
        """The quantiles (the upper end of each bracket; None before a round or for n = 0)."""
        if not self.n:
            return [None] * len(self.probabilities)
        return [_num(hi) for _, hi in self._brackets()]


# --- histogram, table -----------------------------------------------------------------------


def _sum_arrays(parts: Sequence, what: str) -> np.ndarray:
    arrays = [np.asarray(p, dtype=np.int64) for p in parts]
    if not arrays:
        raise StatsError(f"no {what} to pool")
    if any(a.shape != arrays[0].shape for a in arrays):
        raise StatsError(f"the nodes' {what}s have different shapes")
    return np.sum(arrays, axis=0)


def pooled_histogram(parts: Sequence[Sequence[int]]) -> list[int]:
    """Sum of the nodes' `summaries.histogram` counts (same edges)."""
    return [int(c) for c in _sum_arrays(parts, "histogram")]


def pooled_table(parts: Sequence[Sequence[Sequence[int]]]) -> list[list[int]]:
    """Sum of the nodes' `summaries.contingency` tables (same levels)."""
    return _sum_arrays(parts, "table").astype(int).tolist()


# --- correlation, linear model --------------------------------------------------------------


def _pooled_centred(parts: Sequence[dict]) -> tuple[int, np.ndarray, np.ndarray]:
    """Pooled n, column means and centred cross products (X - mean)'(X - mean)."""
    parts = [p for p in parts if int(p["n"]) > 0]
    if not parts:
        raise StatsError("no values to pool")
    n = sum(int(p["n"]) for p in parts)
    sums = np.array([p["sum"] for p in parts], dtype=float)
    if sums.ndim != 2 or any(np.shape(p["xtx"]) != (sums.shape[1],) * 2 for p in parts):
        raise StatsError("the nodes' cross products have different shapes")
    mean = sums.sum(axis=0) / n
    if all("cxx" in p and "mean" in p for p in parts):
        c = np.zeros((mean.size, mean.size))
        for p in parts:
            d = np.asarray(p["mean"], dtype=float) - mean
            c += np.asarray(p["cxx"], dtype=float) + int(p["n"]) * np.outer(d, d)
    else:
        c = sum(np.asarray(p["xtx"], dtype=float) for p in parts) - n * np.outer(mean, mean)
    return n, mean, (c + c.T) / 2


def pooled_correlation(parts: Sequence[dict], names: Sequence[str]) -> dict:
    """Pearson correlation matrix of the columns (`numpy.corrcoef`); parts are
    `summaries.cross_products` results. A constant column's entries are None."""
    n, _, c = _pooled_centred(parts)
    if len(names) != c.shape[0]:
        raise StatsError("one name per column is needed")
    sd = np.sqrt(np.diag(c))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.clip(c / np.outer(sd, sd), -1.0, 1.0)
    return {"n": n, "variables": list(names),
            "matrix": [[_num(v) for v in row] for row in r]}


def _inverse(a: np.ndarray, what: str) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix, scaled to unit diagonal first; a
    singular (collinear) one is refused."""
    d = np.sqrt(np.diag(a))
    if np.any(d <= 0) or not np.all(np.isfinite(a)):
        raise StatsError(f"{what}: a variable is constant or all zero; remove it")
    s = a / np.outer(d, d)
    if np.linalg.cond(s) > 1e12:
        raise StatsError(f"{what}: the variables are collinear; remove one of them")
    inv = np.linalg.inv(s) / np.outer(d, d)
    return (inv + inv.T) / 2


def _coefficients(names, est, se, crit: float, pvalue: Callable) -> list[dict]:
    out = []
    for name, b, s in zip(names, est, se, strict=True):
        out.append({
            "name": name, "estimate": _num(b), "se": _num(s),
            "ci_low": _num(b - crit * s), "ci_high": _num(b + crit * s),
            "p": _num(pvalue(abs(b / s))) if s > 0 else None,
        })
    return out


def linear_fit(parts: Sequence[dict], names: Sequence[str], *, level: float = 0.95) -> dict:
    """Ordinary least squares from the nodes' `summaries.cross_products` of [X, y] (the outcome
    the last column; X has the intercept column the caller added): statsmodels OLS's estimates,
    standard errors, t-based CIs and p-values, sigma (sqrt of the residual variance) and R^2
    (centred when X has a constant column, as statsmodels).

    `names` names X's columns (a trailing name for the outcome is accepted and ignored).
    With a constant column the fit is computed from centred cross products (the equivalent
    centred regression), which keeps it accurate when a covariate's mean is large. The
    residual sum of squares is the quadratic form at the estimate (stationary there, so an
    error in the estimate does not enter to first order); from sums alone its relative error
    is about 1e-16 / (1 - R^2): 1e-9 holds unless the fit is near perfect (R^2 > 0.9999999).
    """
    n, mean, c = _pooled_centred(parts)
    p = c.shape[0] - 1
    names = list(names)[:p] if len(names) == p + 1 else list(names)
    if len(names) != p or p < 1:
        raise StatsError("one name per column of X is needed (the outcome is the last column)")
    if n <= p:
        raise StatsError(f"{n} observations cannot fit {p} parameters")
    y = p
    constant = [j for j in range(p) if c[j, j] == 0.0 and mean[j] != 0.0]
    if len(constant) > 1:
        raise StatsError("more than one constant column in X; keep one intercept")
    if constant:
        k = constant[0]
        s = [j for j in range(p) if j != k]
        beta = np.zeros(p)
        cov = np.zeros((p, p))
        if s:
            inv = _inverse(c[np.ix_(s, s)], "linear model")
            beta[s] = inv @ c[s, y]
            cov[np.ix_(s, s)] = inv
            cross = -inv @ mean[s] / mean[k]
            cov[s, k] = cov[k, s] = cross
            cov[k, k] = (1.0 / n + mean[s] @ inv @ mean[s]) / mean[k] ** 2
        else:
            cov[k, k] = 1.0 / (n * mean[k] ** 2)
        beta[k] = (mean[y] - mean[s] @ beta[s]) / mean[k]
        tss = c[y, y]
        b = beta[s]
        rss = tss - 2 * b @ c[s, y] + b @ c[np.ix_(s, s)] @ b
    else:
        g = c + n * np.outer(mean, mean)
        cov = _inverse(g[:p, :p], "linear model")
        beta = cov @ g[:p, y]
        tss = g[y, y]
        rss = tss - 2 * beta @ g[:p, y] + beta @ g[:p, :p] @ beta
    df = n - p
    sigma2 = max(rss, 0.0) / df
    se = np.sqrt(np.diag(cov) * sigma2)
    crit = float(_dist.t.ppf(0.5 + level / 2, df))
    return {
        "n": n,
        "coefficients": _coefficients(names, beta, se, crit,
                                      lambda t: 2 * _dist.t.sf(t, df)),
        "sigma": _num(math.sqrt(sigma2)),
        "r2": _num(1.0 - rss / tss) if tss > 0 else None,
        "df_resid": df,
    }


# --- logistic model -------------------------------------------------------------------------


def logistic_fit(
    step: Callable[[np.ndarray], list[dict]],
    names: Sequence[str],
    p: int,
    max_iter: int = 25,
    tol: float = 1e-10,
    *,
    level: float = 0.95,
    start: Sequence[float] | None = None,
    se_tol: float | None = None,
) -> dict:
    """Federated Newton-Raphson (= IRLS: the logit link is canonical) for logistic regression.

    `step(beta)` asks every node for `summaries.logistic_terms(X, y, beta)` and returns the
    list; one call is one round (one fan-out). From beta = 0, each round sums the nodes'
    scores and informations and moves beta by information^-1 score. It stops when a step is
    at most tol * (1 + max |beta|) (the step is then applied: Newton's error after it is of
    the order of its square), with standard errors from the information of that round, normal
    (Wald) CIs and p-values: statsmodels Logit / GLM Binomial's. "converged" is false when
    max_iter rounds pass first or the information becomes singular, which is what perfectly
    separated data do (estimates running off to infinity): the caller must not show those
    estimates as a fit. `start`: where the first round is (default 0; `logistic_start`
    gives one near the fit, which saves rounds). `se_tol`: stop also when every step is at
    most this fraction of its coefficient's standard error (for perturbed sums, whose noise
    moves the fit by more than that). Returns {"n", "coefficients", "deviance",
    "iterations", "converged", "information"} (the last round's information matrix: for a
    node's own fit, `logistic_start`; not for showing).
    """
    names = list(names)
    if len(names) != p:
        raise StatsError("one name per column of X is needed")
    beta = np.zeros(p) if start is None else np.asarray(start, dtype=float).copy()
    if beta.shape != (p,) or not np.all(np.isfinite(beta)):
        raise StatsError("the start needs one finite value per column of X")
    converged = False
    cov = np.full((p, p), np.nan)
    info = np.full((p, p), np.nan)
    n, deviance, it = 0, math.nan, 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        parts = step(beta.copy())
        n = sum(int(t["n"]) for t in parts)
        grad = np.sum([np.asarray(t["gradient"], dtype=float) for t in parts], axis=0)
        info = np.sum([np.asarray(t["hessian"], dtype=float) for t in parts], axis=0)
        deviance = math.fsum(float(t["deviance"]) for t in parts)
        try:
            cov = _inverse(info, "logistic model")
        except StatsError:
            break
        delta = cov @ grad
        beta = beta + delta
        if np.max(np.abs(delta)) <= tol * (1.0 + np.max(np.abs(beta))):
            converged = True
            break
        if se_tol is not None and np.all(np.abs(delta) <= se_tol * np.sqrt(np.diag(cov))):
            converged = True
            break
    se = np.sqrt(np.diag(cov))
    crit = float(_dist.norm.ppf(0.5 + level / 2))
    return {
        "n": n,
        "coefficients": _coefficients(names, beta, se, crit, lambda z: 2 * _dist.norm.sf(z)),
        "deviance": _num(deviance),
        "iterations": it,
        "converged": converged,
        "information": info.tolist(),
    }


def logistic_start(parts: Sequence[dict]) -> np.ndarray | None:
    """A starting point for `logistic_fit` from each node's own fit ({"beta", "information"}:
    a node's `logistic_fit` on its own rows): the information-weighted mean of the nodes'
    coefficients, (sum I_k)^-1 sum I_k beta_k. It is within O(1/n) of the pooled fit (a
    one-step meta-analysis), so Newton from it needs two or three rounds instead of five to
    ten. None when a part has no fit (separated data at a node) or the sum is singular."""
    if not parts or any(p is None for p in parts):
        return None
    try:
        infos = [np.asarray(p["information"], dtype=float) for p in parts]
        betas = [np.asarray(p["beta"], dtype=float) for p in parts]
        total = np.sum(infos, axis=0)
        start = np.linalg.solve(total, np.sum([i @ b for i, b in zip(infos, betas,
                                                                     strict=True)], axis=0))
    except (KeyError, TypeError, ValueError, np.linalg.LinAlgError):
        return None
    return start if np.all(np.isfinite(start)) else None


# --- Kaplan-Meier ---------------------------------------------------------------------------


def kaplan_meier(parts: Sequence[dict], unit: str, *, level: float = 0.95) -> dict:
    """Pooled Kaplan-Meier estimate from the nodes' `summaries.km_table` results: lifelines
    KaplanMeierFitter's survival_function_ and its default (exponential Greenwood, "log-log")
    confidence interval, one step per distinct time, with a step at t = 0.

    at_risk is the number still under observation just before t; survival is
    exp(cumsum(log(at_risk - events) - log(at_risk))) (lifelines' own arithmetic).
    """
    times = np.concatenate([np.asarray(p["times"], dtype=float) for p in parts] + [[0.0]])
    events = np.concatenate([np.asarray(p["events"], dtype=np.int64) for p in parts] + [[0]])
    cens = np.concatenate([np.asarray(p["censored"], dtype=np.int64) for p in parts] + [[0]])
    if not (times.size == events.size == cens.size):
        raise StatsError("a node's survival table has lists of different lengths")
    t, inverse = np.unique(times, return_inverse=True)
    d = np.bincount(inverse, weights=events, minlength=t.size)
    c = np.bincount(inverse, weights=cens, minlength=t.size)
    n = int(d.sum() + c.sum())
    at_risk = n - np.concatenate([[0.0], np.cumsum(d + c)[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.cumsum(np.log(at_risk - d) - np.log(at_risk))
        var = d / (at_risk * (at_risk - d))
        var[np.isinf(var)] = 0.0
        var = np.cumsum(var)
        z = float(_dist.norm.ppf(0.5 + level / 2))
        v = log_s
        lower = np.exp(-np.exp(np.log(-v) - z * np.sqrt(var) / v))
        upper = np.exp(-np.exp(np.log(-v) + z * np.sqrt(var) / v))
    surv = np.exp(log_s)
    lower[np.isnan(lower)] = 1.0
    upper[np.isnan(upper)] = 1.0
    keep = at_risk > 0
    steps = [
        {"t": float(t[i]), "at_risk": int(at_risk[i]), "events": int(d[i]),
         "survival": _num(surv[i]), "ci_low": _num(lower[i]), "ci_high": _num(upper[i])}
        for i in np.flatnonzero(keep)
    ]
    return {"unit": unit, "n": n, "steps": steps}
