"""Federated statistics in numpy: node-side aggregates and their exact pooling at the hub.

`summaries` (node): a node's own arrays -> JSON-able aggregates, never rows.
`combine` (hub): the nodes' aggregates -> the statistic of the pooled rows, equal to numpy /
statsmodels / lifelines on the union of the rows to rounding.
`disclosure` (node): per-statistic checks (minimum n, observations per parameter, levels,
table cells) whose limits come from policy.
No database, no HTTP: the node and the hub wire these in.
"""

from spe.stats.combine import (
    QuantileSearch,
    StatsError,
    kaplan_meier,
    linear_fit,
    logistic_fit,
    logistic_start,
    pooled_correlation,
    pooled_histogram,
    pooled_mean_sd,
    pooled_table,
    quantile_rank,
)
from spe.stats.disclosure import binary_outcome, levels, minimum_n, saturation, table_cells
from spe.stats.summaries import (
    contingency,
    counts_at_or_below,
    cross_products,
    histogram,
    km_table,
    logistic_terms,
    moments,
)

__all__ = [
    "QuantileSearch",
    "StatsError",
    "binary_outcome",
    "contingency",
    "counts_at_or_below",
    "cross_products",
    "histogram",
    "kaplan_meier",
    "km_table",
    "levels",
    "linear_fit",
    "logistic_fit",
    "logistic_start",
    "logistic_terms",
    "minimum_n",
    "moments",
    "pooled_correlation",
    "pooled_histogram",
    "pooled_mean_sd",
    "pooled_table",
    "quantile_rank",
    "saturation",
    "table_cells",
]
