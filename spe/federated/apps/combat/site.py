"""One site's part of distributed ComBat (Chen et al., "Distributed ComBat", NeuroImage
2022): the same numbers as neuroCombat (Fortin's Python ComBat, 0.2.12) run on the pooled
data, computed where the data are. Self-contained: imports numpy only (it runs in the
sandbox, which has no `spe`).

ComBat's model, per feature v and sample j of batch i:

    y_jv = alpha_v + x_j' beta_v + gamma_iv + delta_iv * eps_jv

neuroCombat fits it in three passes over the data, and each pass only needs sums a site
can compute alone:

1. `moments`: X'X and X'Y over the site's rows. The centre adds them up and solves for
   B_hat (the pooled least squares, spe.federated.combat.pool_moments); X'X's batch
   diagonal is each batch's sample count, from which the centre weights the grand mean.
2. `residual_ss`: the sum of squared residuals under B_hat, per feature. The centre adds
   them and divides by the total count: var_pooled.
3. `adjust`: with B_hat, the grand mean and var_pooled every site standardises its data
   exactly as neuroCombat standardises the pooled data, and estimates gamma_hat and
   delta_hat of its own batch. ComBat's empirical Bayes priors (gamma_bar, t2, a, b) are
   per batch, taken across the features of that batch only, so the site finds them and
   the posterior (neuroCombat's `it_sol`) itself, and adjusts its rows. Only gamma_star
   and delta_star leave it.

The design matrix is neuroCombat's `make_design_matrix`, column for column:

    [batch one-hot over ALL batches (n_batches columns; this site's column is 1)]
    [for each categorical covariate, in order: one-hot over its levels sorted as
     np.unique sorts them, the FIRST (lowest) level dropped]
    [for each continuous covariate, in order: its value, rounded through float32 as
     neuroCombat's `np.array(..., dtype='float32')` does]

Categoricals all come before continuous covariates whatever the order of `spec`. A site
cannot see the other sites' levels, so they are agreed beforehand (`spec`, or
`DEFAULT_LEVELS`); a level no site has gives an all-zero column, which the centre drops
(as np.unique on the pooled data would never have made it). The lowest level must be
present somewhere: neuroCombat drops the lowest level present.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: Levels of the categorical covariates the combat step reads, as the step writes them.
DEFAULT_LEVELS: dict[str, tuple] = {
    "sex": ("female", "male", "other"),
    "diagnosis": (0, 1),
}
CONTINUOUS = "continuous"
CATEGORICAL = "categorical"
#: neuroCombat's it_sol convergence criterion.
CONVERGENCE = 0.0001
MAX_ITERATIONS = 10_000


def columns(spec: Mapping[str, object]) -> tuple[list[tuple[str, list]], list[str]]:
    """The categorical covariates with their sorted levels, and the continuous ones, in
    `spec`'s order. A value of `spec` is "continuous", "categorical" (levels from
    `DEFAULT_LEVELS`) or a list of levels (categorical)."""
    categorical: list[tuple[str, list]] = []
    continuous: list[str] = []
    for name, kind in spec.items():
        if kind == CONTINUOUS:
            continuous.append(name)
        elif kind == CATEGORICAL:
            if name not in DEFAULT_LEVELS:
                raise ValueError(f"covariate {name!r}: categorical without levels; give "
                                 "its levels in the spec")
            categorical.append((name, sorted(DEFAULT_LEVELS[name])))
        elif isinstance(kind, (list, tuple)) and len(kind) >= 1:
            levels = sorted(set(kind))  # as np.unique orders them
            categorical.append((name, levels))
        else:
            raise ValueError(f"covariate {name!r}: not continuous, categorical or a list "
                             "of levels")
    return categorical, continuous


def column_names(n_batches: int, spec: Mapping[str, object]) -> list[str]:
    """The design's columns, named: batch:<i>, <covariate>=<level>, <covariate>."""
    categorical, continuous = columns(spec)
    names = [f"batch:{i}" for i in range(n_batches)]
    for name, levels in categorical:
        names += [f"{name}={level}" for level in levels[1:]]
    return names + continuous


def width(n_batches: int, spec: Mapping[str, object]) -> int:
    """p, the number of the design's columns."""
    return len(column_names(n_batches, spec))


def design(rows: Sequence[Mapping[str, object]], batch_index: int, n_batches: int,
           spec: Mapping[str, object]) -> np.ndarray:
    """neuroCombat's design matrix for this site's rows (one mapping of covariate values
    per sample), float64, samples x p. A value outside its declared levels or a missing
    one is a ValueError: such rows are left out before."""
    if not 0 <= batch_index < n_batches:
        raise ValueError("batch index outside the batches")
    categorical, continuous = columns(spec)
    n = len(rows)
    batch = np.zeros((n, n_batches))
    batch[:, batch_index] = 1.0
    parts = [batch]
    for name, levels in categorical:
        onehot = np.zeros((n, len(levels)))
        for r, row in enumerate(rows):
            value = row.get(name)
            if value not in levels:
                raise ValueError(f"covariate {name!r}: a value outside its levels")
            onehot[r, levels.index(value)] = 1.0
        parts.append(onehot[:, 1:])
    for name in continuous:
        values = [row.get(name) for row in rows]
        if any(v is None for v in values):
            raise ValueError(f"covariate {name!r}: a missing value")
        parts.append(np.array(values, dtype="float32").reshape(n, 1).astype(np.float64))
    return np.hstack(parts)


def moments(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(X'X (p x p), X'Y (p x f), n) of this site's rows (Y: samples x features)."""
    X, Y = _check(X, Y)
    return X.T @ X, X.T @ Y, X.shape[0]


def residual_ss(X: np.ndarray, Y: np.ndarray, B_hat: np.ndarray) -> tuple[np.ndarray, int]:
    """The sum over this site's rows of squared residuals under the pooled fit B_hat
    (p x f), per feature (f,), and n."""
    X, Y = _check(X, Y)
    residual = Y - X @ np.asarray(B_hat, dtype=np.float64)
    return (residual ** 2).sum(axis=0), X.shape[0]


def standardise(X: np.ndarray, Y: np.ndarray, B_hat: np.ndarray, grand_mean: np.ndarray,
                var_pooled: np.ndarray, n_batches: int) -> tuple[np.ndarray, np.ndarray]:
    """neuroCombat's s_data for this site's rows (samples x features), and the rows'
    stand_mean + mod_mean (what the adjustment adds back)."""
    X, Y = _check(X, Y)
    B_hat = np.asarray(B_hat, dtype=np.float64)
    covariates = X.copy()
    covariates[:, :n_batches] = 0.0
    mean = np.asarray(grand_mean, dtype=np.float64)[None, :] + covariates @ B_hat
    s_data = (Y - mean) / np.sqrt(np.asarray(var_pooled, dtype=np.float64))[None, :]
    return s_data, mean


def priors(gamma_hat: np.ndarray, delta_hat: np.ndarray) -> tuple[float, float, float, float]:
    """This batch's (gamma_bar, t2, a_prior, b_prior), across features, as neuroCombat's
    fit_LS_model_and_find_priors, aprior and bprior."""
    gamma_bar = float(np.mean(gamma_hat))
    t2 = float(np.var(gamma_hat, ddof=1))
    m = float(np.mean(delta_hat))
    s2 = float(np.var(delta_hat, ddof=1))
    return gamma_bar, t2, (2 * s2 + m ** 2) / s2, (m * s2 + m ** 3) / s2


def it_sol(sdat: np.ndarray, g_hat: np.ndarray, d_hat: np.ndarray, g_bar: float, t2: float,
           a: float, b: float, conv: float = CONVERGENCE) -> tuple[np.ndarray, np.ndarray]:
    """neuroCombat's it_sol: the parametric empirical Bayes posterior of one batch.
    sdat is features x samples, as there."""
    n = (1 - np.isnan(sdat)).sum(axis=1)
    g_old, d_old = g_hat.copy(), d_hat.copy()
    change, count = 1.0, 0
    g_new, d_new = g_old, d_old
    while change > conv:
        g_new = (t2 * n * g_hat + d_old * g_bar) / (t2 * n + d_old)
        sum2 = ((sdat - g_new.reshape(-1, 1)) ** 2).sum(axis=1)
        d_new = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
        change = max((abs(g_new - g_old) / g_old).max(), (abs(d_new - d_old) / d_old).max())
        g_old, d_old = g_new, d_new
        count += 1
        if count >= MAX_ITERATIONS:
            raise ArithmeticError("ComBat's empirical Bayes iteration did not converge")
    return g_new, d_new


def adjust(X: np.ndarray, Y: np.ndarray, B_hat: np.ndarray, grand_mean: np.ndarray,
           var_pooled: np.ndarray, n_batches: int, batch_index: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(harmonised Y (samples x features), gamma_star (f,), delta_star (f,)) of this
    site, the one batch `batch_index` of `n_batches`, as neuroCombat's parametric
    empirical Bayes adjustment (eb=True, parametric=True, mean_only=False, no ref_batch)."""
    X, Y = _check(X, Y)
    if not np.all(X[:, batch_index] == 1.0):
        raise ValueError("the design's rows are not all of this site's batch")
    var_pooled = np.asarray(var_pooled, dtype=np.float64)
    s_data, mean = standardise(X, Y, B_hat, grand_mean, var_pooled, n_batches)
    gamma_hat = s_data.mean(axis=0)
    delta_hat = np.var(s_data, axis=0, ddof=1)
    delta_hat[delta_hat == 0] = 1  # neuroCombat's convert_zeroes
    gamma_bar, t2, a, b = priors(gamma_hat, delta_hat)
    gamma_star, delta_star = it_sol(s_data.T, gamma_hat, delta_hat, gamma_bar, t2, a, b)
    harmonised = ((s_data - gamma_star[None, :]) / np.sqrt(delta_star)[None, :]
                  * np.sqrt(var_pooled)[None, :] + mean)
    return harmonised, gamma_star, delta_star


def _check(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError("X must be samples x p and Y samples x features")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("X and Y must be finite")
    return X, Y
