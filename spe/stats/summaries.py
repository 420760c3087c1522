"""Node side: a node's own arrays -> JSON-able aggregates (sums, counts), never rows.

Each function is what one node computes over its cohort; `spe.stats.combine` pools the
nodes' results into the statistic of the union of the nodes' rows. Missing values (NaN) are
dropped by the caller, before these functions see the arrays.

Some results carry, beside the sums the API names, the same information in a centred form
("m2", "mean", "cxx"): sum and sum of squares determine it exactly in real arithmetic, so it
discloses nothing more, but pooling the centred form (Chan et al.'s parallel update) stays
accurate to the last digits where sum-of-squares arithmetic cancels (a variable whose mean is
large beside its spread). The hub uses the centred form when present. Whoever perturbs a
part must perturb the form the hub reads (see `combine`), or drop the centred keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "contingency",
    "counts_at_or_below",
    "cross_products",
    "histogram",
    "km_table",
    "logistic_terms",
    "moments",
]


def _vector(x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError("values must be finite (drop missing values before summarising)")
    return a


def _matrix(X) -> np.ndarray:
    a = np.asarray(X, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError("X must be a two-dimensional array (rows x columns)")
    if not np.all(np.isfinite(a)):
        raise ValueError("values must be finite (drop missing values before summarising)")
    return a


def moments(x) -> dict:
    """Count, sum and sum of squares of `x` (for a pooled mean, SD and CI).

    Returns {"n": int, "sum": float, "sumsq": float, "m2": float}, where m2 is the sum of
    squared deviations from this node's own mean (0.0 for n = 0).
    """
    a = _vector(x)
    n = int(a.size)
    if n == 0:
        return {"n": 0, "sum": 0.0, "sumsq": 0.0, "m2": 0.0}
    mean = a.mean()
    return {
        "n": n,
        "sum": float(a.sum()),
        "sumsq": float(np.dot(a, a)),
        "m2": float(np.sum((a - mean) ** 2)),
    }


def counts_at_or_below(x, thresholds: Sequence[float]) -> list[int]:
    """For each threshold t, how many values are <= t (the empirical CDF, unnormalised).

    The only question `combine.QuantileSearch` asks a node.
    """
    a = np.sort(_vector(x))
    t = np.asarray(thresholds, dtype=float).ravel()
    if np.any(np.isnan(t)):
        raise ValueError("thresholds must not be NaN")
    return [int(c) for c in np.searchsorted(a, t, side="right")]


def histogram(x, edges: Sequence[float]) -> list[int]:
    """Counts per bin, `numpy.histogram` semantics: bins [e0, e1), ..., [e_{k-1}, e_k] (the
    last bin closed); values outside [e0, e_k] are not counted."""
    e = np.asarray(edges, dtype=float).ravel()
    if e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError("edges must be at least two finite, strictly increasing numbers")
    counts, _ = np.histogram(_vector(x), bins=e)
    return [int(c) for c in counts]


def cross_products(X) -> dict:
    """Sufficient statistics of the columns of X (n x p): for correlation and linear models.

    Returns {"n", "sum": [p], "xtx": [[p x p]], "mean": [p], "cxx": [[p x p]]}: X'X and, in
    centred form, this node's column means and (X - mean)'(X - mean). For a linear model the
    caller passes the design (its intercept column included) with the outcome as the LAST
    column: `cross_products(np.column_stack([X, y]))`.
    """
    a = _matrix(X)
    n, p = a.shape
    if n == 0:
        zeros = np.zeros((p, p))
        return {"n": 0, "sum": [0.0] * p, "xtx": zeros.tolist(), "mean": [0.0] * p,
                "cxx": zeros.tolist()}
    mean = a.mean(axis=0)
    c = a - mean
    return {
        "n": int(n),
        "sum": a.sum(axis=0).tolist(),
        "xtx": (a.T @ a).tolist(),
        "mean": mean.tolist(),
        "cxx": (c.T @ c).tolist(),
    }


def _log_sigmoid(eta: np.ndarray) -> np.ndarray:
    """log(1 / (1 + exp(-eta))), without overflow."""
    return -np.logaddexp(0.0, -eta)


def logistic_terms(X, y, beta) -> dict:
    """One node's share of a Newton (IRLS) step of logistic regression at `beta`.

    With mu = 1 / (1 + exp(-X beta)):
      gradient = X'(y - mu)              (the score: d loglik / d beta)
      hessian  = X' diag(mu (1 - mu)) X  (the Fisher information, i.e. MINUS the Hessian of
                                          the log-likelihood; positive definite)
      deviance = -2 loglik
    Summed over nodes, these are the pooled data's: the hub's step is information^-1 score.
    """
    a = _matrix(X)
    yy = _vector(y)
    b = np.asarray(beta, dtype=float).ravel()
    if yy.size != a.shape[0]:
        raise ValueError("X and y must have the same number of rows")
    if b.size != a.shape[1]:
        raise ValueError("beta must have one value per column of X")
    if np.any((yy != 0) & (yy != 1)):
        raise ValueError("the outcome must be coded 0/1")
    eta = a @ b
    mu = np.exp(_log_sigmoid(eta))
    w = mu * (1.0 - mu)
    loglik = np.sum(yy * _log_sigmoid(eta) + (1.0 - yy) * _log_sigmoid(-eta))
    return {
        "n": int(a.shape[0]),
        "gradient": (a.T @ (yy - mu)).tolist(),
        "hessian": ((a * w[:, None]).T @ a).tolist(),
        "deviance": float(-2.0 * loglik),
    }


def _codes_to_index(codes, levels) -> np.ndarray:
    """Index of each code in `levels` (-1 where the code is not a level)."""
    lv = np.asarray(list(levels))
    c = np.asarray(codes).ravel()
    if lv.size == 0:
        return np.full(c.size, -1)
    if len(set(lv.tolist())) != lv.size:
        raise ValueError("levels must be distinct")
    order = np.argsort(lv, kind="stable")
    ranked = lv[order]
    pos = np.searchsorted(ranked, c)
    pos_c = np.minimum(pos, lv.size - 1)
    hit = (pos < lv.size) & (ranked[pos_c] == c)
    return np.where(hit, order[pos_c], -1)


def contingency(a_codes, b_codes, a_levels: Sequence, b_levels: Sequence) -> list[list[int]]:
    """Two-way table of counts: rows are `a_levels`, columns `b_levels` (in the given order);
    pairs where either code is not a listed level are not counted."""
    ai = _codes_to_index(a_codes, a_levels)
    bi = _codes_to_index(b_codes, b_levels)
    if ai.size != bi.size:
        raise ValueError("a_codes and b_codes must have the same length")
    na, nb = len(a_levels), len(b_levels)
    keep = (ai >= 0) & (bi >= 0)
    flat = np.bincount(ai[keep] * nb + bi[keep], minlength=na * nb)
    return flat.reshape(na, nb).astype(int).tolist()


def km_table(time, event) -> dict:
    """Kaplan-Meier's sufficient statistics: per distinct time, events and censorings.

    `time` is already binned to whole units (days, weeks, months) by the caller, `event` is
    1 (the event happened at `time`) or 0 (censored at `time`). Returns
    {"times": [t ascending], "events": [int], "censored": [int]}.
    """
    t = _vector(time)
    e = _vector(event)
    if t.size != e.size:
        raise ValueError("time and event must have the same length")
    if np.any(t < 0):
        raise ValueError("times must not be negative")
    if np.any((e != 0) & (e != 1)):
        raise ValueError("event must be coded 0/1")
    times, inverse = np.unique(t, return_inverse=True)
    events = np.bincount(inverse, weights=e, minlength=times.size)
    total = np.bincount(inverse, minlength=times.size)
    return {
        "times": times.tolist(),
        "events": [int(v) for v in events],
        "censored": [int(v) for v in total - events],
    }
