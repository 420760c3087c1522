"""The centre's part of distributed ComBat (Chen et al., NeuroImage 2022): it pools what
the sites send and hands back the pooled estimates, so that every site adjusts its data
exactly as neuroCombat would adjust the pooled data (spe/federated/apps/combat/site.py,
which says the model and the design's encoding). numpy only.

Three rounds, each a `Contract` of what a site may send (spe.wire.rounds):

    "moments"   site -> xtx [p, p], xty [p, f]     centre: B_hat = pool_moments(...)
    "variance"  input B_hat [p, f]                  site -> ssr [f]
                                                    centre: var_pooled = pool_variance(...)
    "adjust"    input B_hat, grand_mean [f],        site -> gamma_star [f], delta_star [f]
                var_pooled [f]                      (the harmonised rows stay: keep)

p is the design's width (`site.width(n_batches, covariates)`), f the number of features.
The count of samples (series) per batch, which neuroCombat's grand mean weighs by, is the
batch diagonal of the pooled X'X (`batch_sizes`); the `n` of an update is patients, for
the node's gate.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from spe.wire.rounds import ArraySpec, Contract

MOMENTS = "moments"
VARIANCE = "variance"
ADJUST = "adjust"
KINDS = (MOMENTS, VARIANCE, ADJUST)

#: Sums over a site's rows: generous, finite (intensities in the thousands, squared,
#: times thousands of series, stay far below).
SUM_BOUND = 1e15
#: gamma_star is in units of the pooled standard deviation, delta_star a variance ratio.
STAR_BOUND = 1e6


def moments_contract(p: int, f: int) -> Contract:
    return Contract(arrays={
        "xtx": ArraySpec(shape=[p, p], min=-SUM_BOUND, max=SUM_BOUND),
        "xty": ArraySpec(shape=[p, f], min=-SUM_BOUND, max=SUM_BOUND),
    })


def variance_contract(p: int, f: int) -> Contract:
    return Contract(arrays={"ssr": ArraySpec(shape=[f], min=0.0, max=SUM_BOUND)})


def adjust_contract(p: int, f: int) -> Contract:
    return Contract(arrays={
        "gamma_star": ArraySpec(shape=[f], min=-STAR_BOUND, max=STAR_BOUND),
        "delta_star": ArraySpec(shape=[f], min=0.0, max=STAR_BOUND),
    }, keep=True)


def contracts(p: int, f: int) -> dict[str, Contract]:
    """Every round's contract, by kind."""
    return {MOMENTS: moments_contract(p, f), VARIANCE: variance_contract(p, f),
            ADJUST: adjust_contract(p, f)}


def pool_moments(updates: Iterable[tuple[np.ndarray, np.ndarray, int]]) -> np.ndarray:
    """B_hat (p x f), the pooled least squares of the sites' (X'X, X'Y, n): what
    neuroCombat's standardize_across_features fits on the pooled data. A column no site
    has (a declared level nobody has: its diagonal is 0) is left out of the fit, as
    np.unique on the pooled data would never have made it, and its coefficients are 0."""
    updates = list(updates)
    if not updates:
        raise ValueError("no site sent its moments")
    xtx = sum(np.asarray(u[0], dtype=np.float64) for u in updates)
    xty = sum(np.asarray(u[1], dtype=np.float64) for u in updates)
    if xtx.ndim != 2 or xtx.shape[0] != xtx.shape[1] or xty.shape[0] != xtx.shape[0]:
        raise ValueError("the moments' shapes do not agree")
    used = np.diag(xtx) > 0
    B_hat = np.zeros(xty.shape)
    kept = xtx[np.ix_(used, used)]
    if np.linalg.matrix_rank(kept) < kept.shape[0]:
        raise np.linalg.LinAlgError("the pooled design is singular: a covariate is "
                                    "constant or collinear with the batches")
    B_hat[used] = np.linalg.solve(kept, xty[used])
    return B_hat


def batch_sizes(xtx: np.ndarray | Iterable[np.ndarray], n_batches: int) -> np.ndarray:
    """Samples per batch: the batch diagonal of the pooled X'X (or of the sum of the
    sites' X'X)."""
    if not isinstance(xtx, np.ndarray):
        xtx = sum(np.asarray(x, dtype=np.float64) for x in xtx)
    return np.rint(np.diag(xtx)[:n_batches]).astype(np.int64)


def grand_mean(B_hat: np.ndarray, ns: Iterable[int]) -> np.ndarray:
    """neuroCombat's grand mean (f,): the batches' intercepts weighted by their sizes."""
    ns = np.asarray(list(ns), dtype=np.float64)
    if ns.ndim != 1 or (ns <= 0).any():
        raise ValueError("every batch needs samples")
    return (ns / ns.sum()) @ np.asarray(B_hat, dtype=np.float64)[:len(ns)]


def pool_variance(updates: Iterable[tuple[np.ndarray, int]]) -> np.ndarray:
    """neuroCombat's var_pooled (f,): the sites' sums of squared residuals over the total
    number of samples. A feature of zero variance gets what neuroCombat gives it,
    np.median(var_pooled != 0) (a fraction, as there)."""
    updates = list(updates)
    if not updates:
        raise ValueError("no site sent its residuals")
    ssr = sum(np.asarray(u[0], dtype=np.float64) for u in updates)
    n = sum(int(u[1]) for u in updates)
    if n <= 0:
        raise ValueError("no samples")
    var_pooled = ssr / float(n)
    var_pooled[var_pooled == 0] = np.median(var_pooled != 0)
    return var_pooled
