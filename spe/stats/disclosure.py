"""Per-statistic disclosure checks a node applies before it answers (pure functions).

DataSHIELD-like filters: each returns None when the aggregate may leave the node, or a
reason a researcher can act on. The limits are parameters with no defaults: the policy
(`policies/disclosure`, read through spe/policy) supplies them, and a missing limit is the
caller's error, not a silent default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["binary_outcome", "levels", "minimum_n", "saturation", "table_cells"]


def minimum_n(n: int, *, min_n: int) -> str | None:
    """Refuse a summary of fewer than min_n values at this node."""
    if n < min_n:
        return (f"fewer than {min_n} values at this site; widen the cohort or choose a "
                "variable recorded for more patients")
    return None


def saturation(n: int, p: int, *, min_per_parameter: int) -> str | None:
    """Refuse a model with fewer than min_per_parameter observations per parameter (a
    saturated or nearly saturated model reproduces its rows: DataSHIELD's nfilter.glm)."""
    if p < 1:
        return "the model has no parameters"
    if n <= p or n < min_per_parameter * p:
        return (f"{n} observations at this site for {p} parameters; a model needs at least "
                f"{min_per_parameter} per parameter: drop covariates or widen the cohort")
    return None


def levels(n_levels: int, n: int, *, max_levels: int, max_density: float) -> str | None:
    """Refuse a categorical variable with too many levels, absolutely or for its count
    (more than max_density * n levels nearly identifies rows: DataSHIELD's nfilter.levels)."""
    if n_levels > max_levels:
        return f"{n_levels} categories; at most {max_levels} are allowed: group them"
    if n_levels > max_density * n:
        return (f"{n_levels} categories for {n} values at this site is nearly one per "
                "patient: group the categories or widen the cohort")
    return None


def table_cells(
    table: Sequence[Sequence[int]], *, min_cell: int, min_per_cell: float
) -> str | None:
    """Refuse a two-way table with a cell count between 1 and min_cell - 1 (DataSHIELD's
    nfilter.tab), or a saturated one: fewer than min_per_cell observations per cell on
    average (its cells then describe little groups)."""
    t = np.asarray(table, dtype=np.int64)
    if t.size == 0:
        return "the table has no cells"
    small = int(np.count_nonzero((t > 0) & (t < min_cell)))
    if small:
        return (f"{small} cell(s) count fewer than {min_cell} patients at this site; merge "
                "categories or widen the cohort")
    if t.sum() < min_per_cell * t.size:
        return (f"{int(t.sum())} patients over {t.size} cells is too sparse a table; use "
                "fewer categories")
    return None


def binary_outcome(y, *, min_per_class: int) -> str | None:
    """Refuse a logistic model whose 0/1 outcome has fewer than min_per_class of either
    value at this site (the fit would then describe those few patients)."""
    a = np.asarray(y).ravel()
    ones = int(np.count_nonzero(a == 1))
    zeros = int(a.size - ones)
    if min(ones, zeros) < min_per_class:
        return (f"the outcome has {min(ones, zeros)} patient(s) in one of its two values at "
                f"this site; at least {min_per_class} are needed in each")
    return None
