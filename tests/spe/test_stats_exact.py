"""The federated statistics of spe/stats equal the same statistics on the pooled rows.

Each test splits random data over three "nodes" of uneven sizes (one of a single row where
the statistic allows), lets each node summarise its own rows (`spe.stats.summaries`), pools
the summaries at the "hub" (`spe.stats.combine`) and compares with numpy / statsmodels /
lifelines on the concatenated rows, to 1e-9 relative.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest
from scipy import stats as dist

from spe import stats

RTOL, ATOL = 1e-9, 1e-12
SIZES = (1, 57, 442)  # three nodes, one with a single row


def split(*arrays, sizes=SIZES):
    """The rows of `arrays` dealt to len(sizes) nodes, in order."""
    cuts = np.cumsum(sizes)[:-1]
    return list(zip(*(np.split(np.asarray(a), cuts) for a in arrays), strict=True))


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                               rtol=rtol, atol=atol)


def json_clean(result):
    """A result is JSON without NaN or infinity."""
    json.dumps(result, allow_nan=False)
    return result


def rng(seed=16):
    return np.random.default_rng(seed)


# --- mean, SD --------------------------------------------------------------------------------

MEAN_CASES = {
    "normal": rng().normal(50, 10, 500),
    "large mean, small spread": 1e6 + rng(1).normal(0, 0.01, 500),
    "integers with ties": rng(2).integers(0, 5, 500).astype(float),
    "all equal": np.full(500, 0.1),
}


@pytest.mark.parametrize("name", list(MEAN_CASES))
def test_pooled_mean_sd_equals_numpy(name):
    x = MEAN_CASES[name]
    result = json_clean(stats.pooled_mean_sd([stats.moments(a) for (a,) in split(x)]))
    n = x.size
    sd = x.std(ddof=1)
    half = dist.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    assert result["n"] == n
    close(result["mean"], x.mean())
    close(result["sd"], sd)
    close(result["ci"], [x.mean() - half, x.mean() + half])


def test_pooled_mean_sd_of_an_empty_node_and_of_too_few_values():
    x = rng().normal(size=2)
    result = stats.pooled_mean_sd([stats.moments(x[:1]), stats.moments([]), stats.moments(x[1:])])
    close(result["sd"], x.std(ddof=1))
    assert stats.pooled_mean_sd([stats.moments([3.0])]) == {
        "n": 1, "mean": 3.0, "sd": None, "ci": None}
    assert stats.pooled_mean_sd([stats.moments([])])["mean"] is None


def test_pooled_mean_sd_without_the_centred_form_uses_the_sums():
    x = MEAN_CASES["normal"]
    parts = [{k: v for k, v in stats.moments(a).items() if k != "m2"} for (a,) in split(x)]
    close(stats.pooled_mean_sd(parts)["sd"], x.std(ddof=1))


# --- quantiles -------------------------------------------------------------------------------

PROBABILITIES = [0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999, 1.0]
QUANTILE_CASES = {  # (values, lo, hi, rounds at most)
    "continuous": (rng().normal(50, 10, 500), 0.0, 120.0, 9),
    "integers (ties)": (np.round(rng(3).normal(50, 10, 500)), 0.0, 120.0, 3),
    "one decimal": (np.round(rng(4).gamma(2.0, 2.0, 500), 1), 0.0, 100.0, 4),
    "mostly zeros": (np.maximum(rng(5).integers(-20, 4, 500), 0).astype(float), 0.0, 50.0, 3),
    "all equal": (np.full(500, 7.25), 0.0, 10.0, 3),
    "tiny magnitudes": (rng(6).lognormal(-12, 1, 500), 0.0, 1.0, 12),
    "outside the range given": (rng(7).normal(-500, 100, 500), 0.0, 10.0, 14),
}


def run_search(parts, search):
    while not search.done:
        thresholds = search.thresholds()
        assert thresholds == sorted(set(thresholds))
        totals = np.sum([stats.counts_at_or_below(a, thresholds) for a in parts], axis=0)
        search.update(totals.tolist(), sum(a.size for a in parts))
    return search


@pytest.mark.parametrize("name", list(QUANTILE_CASES))
def test_quantile_search_equals_numpy_inverted_cdf(name):
    x, lo, hi, max_rounds = QUANTILE_CASES[name]
    search = run_search([a for (a,) in split(x)], stats.QuantileSearch(PROBABILITIES, lo, hi))
    assert all(search.resolved)
    assert search.rounds <= max_rounds
    close(search.values(), np.quantile(x, PROBABILITIES, method="inverted_cdf"), atol=0)


def test_quantile_search_is_exact_with_rtol_zero():
    x = rng(8).normal(50, 10, 500)
    search = stats.QuantileSearch(PROBABILITIES, 0, 120, rtol=0.0, max_rounds=30)
    run_search([a for (a,) in split(x)], search)
    assert search.values() == np.quantile(x, PROBABILITIES, method="inverted_cdf").tolist()
    assert search.rounds <= 12


@pytest.mark.parametrize("offset", [-2, 3, -1000, 1000])
def test_quantile_search_with_a_rank_offset_finds_the_shifted_order_statistic(offset):
    x = rng(10).normal(50, 10, 500)
    search = stats.QuantileSearch([0.1, 0.5, 0.9], 0, 120, rtol=0.0, max_rounds=40)
    search.rank_offset = offset
    run_search([a for (a,) in split(x)], search)
    ranks = [min(max(stats.quantile_rank(x.size, p) + offset, 1), x.size)
             for p in (0.1, 0.5, 0.9)]
    assert search.values() == [float(np.sort(x)[k - 1]) for k in ranks]


def test_quantile_search_stops_after_max_rounds_unresolved():
    x = rng(9).normal(50, 10, 500)
    search = run_search([x], stats.QuantileSearch([0.5], 0, 120, max_rounds=2))
    assert search.rounds == 2
    assert search.resolved == [False]
    assert search.thresholds() == []


def test_quantile_search_of_no_values():
    search = run_search([np.array([])], stats.QuantileSearch([0.5], 0, 1))
    assert search.values() == [None]


def test_quantile_rank_is_numpys():
    ranks = [(n, p) for n in range(1, 60) for p in np.linspace(0, 1, 101)]
    assert ranks
    for n, p in ranks:
        x = np.arange(1.0, n + 1)
        assert stats.quantile_rank(n, p) == np.quantile(x, p, method="inverted_cdf")


def test_quantile_search_refuses_inconsistent_counts():
    search = stats.QuantileSearch([0.5], 0, 10, grid=4)
    thresholds = search.thresholds()
    with pytest.raises(stats.StatsError):
        search.update(list(range(len(thresholds), 0, -1)), 10)


# --- histogram, table ------------------------------------------------------------------------


def test_pooled_histogram_equals_numpy_with_values_on_edges():
    x = np.concatenate([rng().integers(0, 10, 499).astype(float), [10.0]])
    x[:5] = [-1.0, 11.0, 0.0, 5.0, 10.0]  # outside, and on the first, middle and last edges
    edges = [0.0, 2.5, 5.0, 7.5, 10.0]
    pooled = stats.pooled_histogram([stats.histogram(a, edges) for (a,) in split(x)])
    assert pooled == np.histogram(x, bins=edges)[0].tolist()


def test_pooled_table_equals_the_pooled_crosstab():
    r = rng(10)
    a = r.choice(["female", "male", "unknown"], 500)
    b = r.choice([1, 2, 3, 4, 9], 500)  # 9 is not a level: not counted
    a_levels, b_levels = ["female", "male", "other", "unknown"], [4, 3, 2, 1]
    parts = [stats.contingency(x, y, a_levels, b_levels) for x, y in split(a, b)]
    counted = Counter(zip(a.tolist(), b.tolist(), strict=True))
    expected = [[counted[(i, j)] for j in b_levels] for i in a_levels]
    assert stats.pooled_table(parts) == expected
    assert expected[2] == [0, 0, 0, 0]


def test_pooled_table_refuses_tables_of_different_shapes():
    with pytest.raises(stats.StatsError):
        stats.pooled_table([[[1, 2]], [[1, 2, 3]]])


# --- correlation, linear model ---------------------------------------------------------------


def covariates(seed=11, n=500):
    r = rng(seed)
    age = np.round(r.normal(55, 15, n))  # integers, ties
    sex = r.integers(0, 2, n).astype(float)
    sodium = 140 + r.normal(0, 3, n)  # large mean beside its spread
    y = 2.0 + 0.03 * age - 0.7 * sex + 0.1 * sodium + r.normal(0, 1, n)
    return age, sex, sodium, y


def test_pooled_correlation_equals_numpy_corrcoef():
    age, sex, sodium, y = covariates()
    X = np.column_stack([age, sex, sodium, y])
    result = json_clean(stats.pooled_correlation(
        [stats.cross_products(a) for (a,) in split(X)], ["age", "sex", "sodium", "y"]))
    assert result["n"] == 500
    close(result["matrix"], np.corrcoef(X, rowvar=False))


def test_pooled_correlation_of_a_constant_column_is_none():
    age, _, _, y = covariates()
    X = np.column_stack([age, np.full(age.size, 3.0), y])
    matrix = stats.pooled_correlation([stats.cross_products(a) for (a,) in split(X)],
                                      ["age", "c", "y"])["matrix"]
    assert matrix[1] == [None, None, None]
    close(matrix[0][2], np.corrcoef(age, y)[0, 1])


def check_against_statsmodels(result, fit, names):
    assert [c["name"] for c in result["coefficients"]] == names
    ci = np.asarray(fit.conf_int())
    close([c["estimate"] for c in result["coefficients"]], fit.params)
    close([c["se"] for c in result["coefficients"]], fit.bse)
    close([c["ci_low"] for c in result["coefficients"]], ci[:, 0])
    close([c["ci_high"] for c in result["coefficients"]], ci[:, 1])
    # p-values: relative below 1e-15 means nothing (d log p / d t is about t), so absolute there
    close([c["p"] for c in result["coefficients"]], fit.pvalues, atol=1e-15)


@pytest.mark.parametrize("intercept", [True, False])
def test_linear_fit_equals_statsmodels_ols(intercept):
    sm = pytest.importorskip("statsmodels.api")
    age, sex, sodium, y = covariates()
    columns = ([np.ones(age.size)] if intercept else []) + [age, sex, sodium]
    names = (["intercept"] if intercept else []) + ["age", "sex", "sodium"]
    X = np.column_stack(columns)
    parts = [stats.cross_products(np.column_stack([a, b])) for a, b in split(X, y)]
    result = json_clean(stats.linear_fit(parts, names))
    fit = sm.OLS(y, X).fit()
    assert result["n"] == 500
    check_against_statsmodels(result, fit, names)
    close(result["sigma"], np.sqrt(fit.scale))
    close(result["r2"], fit.rsquared)
    assert stats.linear_fit(parts, [*names, "y"])["coefficients"] == result["coefficients"]


def test_linear_fit_of_a_tight_fit_equals_statsmodels_ols():
    sm = pytest.importorskip("statsmodels.api")
    age, _, sodium, _ = covariates()
    y = 2.0 + 3.0 * age + 20.0 * sodium + rng(15).normal(0, 0.3, age.size)
    X = np.column_stack([np.ones(age.size), age, sodium])
    parts = [stats.cross_products(np.column_stack([a, b])) for a, b in split(X, y)]
    result = stats.linear_fit(parts, ["intercept", "age", "sodium"])
    fit = sm.OLS(y, X).fit()
    assert fit.rsquared > 0.9999
    check_against_statsmodels(result, fit, ["intercept", "age", "sodium"])
    close(result["r2"], fit.rsquared)
    close(result["sigma"], np.sqrt(fit.scale))


def test_linear_fit_of_the_intercept_alone_is_the_mean():
    sm = pytest.importorskip("statsmodels.api")
    y = covariates()[3]
    parts = [stats.cross_products(np.column_stack([np.ones(a.size), a])) for (a,) in split(y)]
    result = stats.linear_fit(parts, ["intercept"])
    check_against_statsmodels(result, sm.OLS(y, np.ones(y.size)).fit(), ["intercept"])


def test_linear_fit_refuses_collinear_and_saturated_designs():
    age, sex, _, y = covariates()
    X = np.column_stack([np.ones(age.size), age, 2 * age + 1, y])
    with pytest.raises(stats.StatsError, match="collinear"):
        stats.linear_fit([stats.cross_products(X)], ["intercept", "age", "age2"])
    with pytest.raises(stats.StatsError, match="parameters"):
        stats.linear_fit([stats.cross_products(X[:3])], ["intercept", "age", "age2"])


# --- logistic model --------------------------------------------------------------------------


def logistic_data(seed=12, n=500):
    r = rng(seed)
    age, sex = np.round(r.normal(55, 15, n)), r.integers(0, 2, n).astype(float)
    X = np.column_stack([np.ones(n), age, sex])
    y = (r.random(n) < 1 / (1 + np.exp(-(-3 + 0.05 * age + 0.6 * sex)))).astype(float)
    return X, y


def federated_step(X, y, sizes=SIZES):
    nodes = split(X, y, sizes=sizes)
    calls = []

    def step(beta):
        calls.append(beta)
        return [stats.logistic_terms(a, b, beta) for a, b in nodes]

    return step, calls


def test_logistic_fit_equals_statsmodels_logit_and_glm_binomial():
    sm = pytest.importorskip("statsmodels.api")
    X, y = logistic_data()
    names = ["intercept", "age", "sex"]
    step, calls = federated_step(X, y)
    result = json_clean(stats.logistic_fit(step, names, 3))
    assert result["converged"]
    assert result["iterations"] == len(calls) <= 10
    logit = sm.Logit(y, X).fit(disp=0, tol=1e-12, maxiter=100)
    check_against_statsmodels(result, logit, names)
    glm = sm.GLM(y, X, family=sm.families.Binomial()).fit(tol=1e-13)
    check_against_statsmodels(result, glm, names)
    close(result["deviance"], glm.deviance)
    assert result["n"] == 500


def test_logistic_fit_from_the_nodes_own_fits_is_the_same_fit_in_fewer_rounds():
    sm = pytest.importorskip("statsmodels.api")
    X, y = logistic_data()
    names = ["intercept", "age", "sex"]
    own = []
    for a, b in split(X, y):
        fit = stats.logistic_fit(lambda beta, a=a, b=b: [stats.logistic_terms(a, b, beta)],
                                 names, 3)
        own.append({"beta": [c["estimate"] for c in fit["coefficients"]],
                    "information": fit["information"]})
    start = stats.logistic_start(own)
    step, calls = federated_step(X, y)
    result = json_clean(stats.logistic_fit(step, names, 3, start=start))
    check_against_statsmodels(result, sm.Logit(y, X).fit(disp=0, tol=1e-12, maxiter=100),
                              names)
    zero_step, zero_calls = federated_step(X, y)
    stats.logistic_fit(zero_step, names, 3)
    assert len(calls) < len(zero_calls)
    # A node without a fit of its own (separated data): no start, Newton from 0.
    assert stats.logistic_start([own[0], None]) is None


def test_logistic_fit_flags_separated_data_as_not_converged():
    r = rng(13)
    x = r.normal(0, 1, 200)
    X, y = np.column_stack([np.ones(200), x]), (x > 0).astype(float)
    step, calls = federated_step(X, y, sizes=(1, 60, 139))
    result = json_clean(stats.logistic_fit(step, ["intercept", "x"], 2))
    assert result["converged"] is False
    assert len(calls) <= 25


def test_logistic_terms_refuse_an_outcome_not_coded_0_1():
    with pytest.raises(ValueError, match="0/1"):
        stats.logistic_terms(np.ones((2, 1)), [0, 2], [0.0])


# --- Kaplan-Meier ----------------------------------------------------------------------------


def km_data(seed=14, n=500):
    r = rng(seed)
    event_time = np.ceil(r.exponential(300, n) / 30)  # months, many ties
    censor_time = np.ceil(r.uniform(0, 900, n) / 30)
    time = np.minimum(event_time, censor_time)
    event = (event_time <= censor_time).astype(float)
    time[:3], event[:3] = 0.0, [1.0, 0.0, 1.0]  # events and a censoring at time 0
    return time, event


def check_against_lifelines(result, time, event):
    lifelines = pytest.importorskip("lifelines")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = lifelines.KaplanMeierFitter().fit(time, event)
    steps = result["steps"]
    table = km.event_table
    assert steps
    assert [s["t"] for s in steps] == km.survival_function_.index.tolist()
    assert [s["at_risk"] for s in steps] == table["at_risk"].tolist()
    assert [s["events"] for s in steps] == table["observed"].tolist()
    close([s["survival"] for s in steps], km.survival_function_.iloc[:, 0])
    close([s["ci_low"] for s in steps], km.confidence_interval_.iloc[:, 0])
    close([s["ci_high"] for s in steps], km.confidence_interval_.iloc[:, 1])


def test_kaplan_meier_equals_lifelines():
    time, event = km_data()
    parts = [stats.km_table(t, e) for t, e in split(time, event)]
    result = json_clean(stats.kaplan_meier(parts, "month"))
    assert result["n"] == 500
    assert result["unit"] == "month"
    check_against_lifelines(result, time, event)


def test_kaplan_meier_down_to_zero_and_without_time_zero():
    time = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 7.0])
    event = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])  # the last one at risk dies: S = 0
    parts = [stats.km_table(t, e) for t, e in split(time, event, sizes=(1, 2, 4))]
    result = json_clean(stats.kaplan_meier(parts, "day"))
    assert result["steps"][0]["t"] == 0.0
    assert result["steps"][-1]["survival"] == 0.0
    check_against_lifelines(result, time, event)


# --- disclosure checks -----------------------------------------------------------------------


def test_disclosure_checks_refuse_with_a_reason_and_pass_otherwise():
    assert stats.saturation(30, 3, min_per_parameter=10) is None
    assert "per parameter" in stats.saturation(29, 3, min_per_parameter=10)
    assert stats.saturation(3, 3, min_per_parameter=1)
    assert stats.minimum_n(9, min_n=10)
    assert stats.minimum_n(10, min_n=10) is None
    assert stats.levels(5, 100, max_levels=40, max_density=0.33) is None
    assert stats.levels(50, 1000, max_levels=40, max_density=0.33)
    assert stats.levels(5, 12, max_levels=40, max_density=0.33)
    assert stats.table_cells([[0, 10], [12, 30]], min_cell=3, min_per_cell=5) is None
    assert "fewer than 3" in stats.table_cells([[2, 10], [12, 30]], min_cell=3, min_per_cell=5)
    assert "sparse" in stats.table_cells([[0, 3], [3, 0]], min_cell=3, min_per_cell=5)
    assert stats.binary_outcome([0, 1, 1, 0], min_per_class=2) is None
    assert stats.binary_outcome([0, 1, 1, 1], min_per_class=2)
