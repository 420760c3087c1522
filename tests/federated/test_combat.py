"""Distributed ComBat (spe/federated/apps/combat/site.py at each site, spe/federated/combat.py
at the centre) equals neuroCombat run on the pooled data.

Three simulated sites of uneven sizes, with strong site location and scale effects, a real
age effect and sex and diagnosis effects, run the three rounds in process: moments ->
B_hat, residuals -> var_pooled, adjust -> gamma_star, delta_star and the harmonised rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from neuroCombat import neuroCombat
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spe.federated import combat
from spe.federated.apps.combat import site

SIZES = (40, 60, 80)
FEATURES = 10
SPEC = {"age": "continuous", "sex": "categorical", "diagnosis": "categorical"}
AGE_EFFECT = np.linspace(0.5, 1.5, FEATURES)


def simulate(seed: int = 7, sizes=SIZES, shifted_ages: bool = True):
    """Per site: (covariate rows, Y samples x features)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(50, 150, FEATURES)
    sex_effect = rng.normal(0, 4, FEATURES)
    diagnosis_effect = rng.normal(0, 6, FEATURES)
    shift = np.array([[-15.0], [0.0], [20.0]]) + rng.normal(0, 5, (3, FEATURES))
    scale = np.array([[0.5], [1.0], [2.2]]) * rng.uniform(0.8, 1.25, (3, FEATURES))
    sites = []
    for i, n in enumerate(sizes):
        # Ages overlap but are not the same at every site (a real confounder to keep).
        age = rng.uniform(20, 80, n) + (4.0 * (i - 1) if shifted_ages else 0.0)
        sex = rng.choice(["female", "male"], n)
        diagnosis = rng.integers(0, 2, n)
        Y = (base + np.outer(age, AGE_EFFECT) + np.outer(sex == "male", sex_effect)
             + np.outer(diagnosis, diagnosis_effect)
             + shift[i] + scale[i] * rng.normal(0, 2, (n, FEATURES)))
        rows = [{"age": float(a), "sex": str(s), "diagnosis": int(d)}
                for a, s, d in zip(age, sex, diagnosis, strict=True)]
        sites.append((rows, Y))
    return sites


def distributed(sites, spec=SPEC):
    """The three rounds, as the hub and the nodes run them: per site (harmonised Y,
    gamma_star, delta_star)."""
    k = len(sites)
    designs = [site.design(rows, i, k, spec) for i, (rows, _) in enumerate(sites)]
    updates = [site.moments(X, Y) for X, (_, Y) in zip(designs, sites, strict=True)]
    B_hat = combat.pool_moments(updates)
    ns = combat.batch_sizes([u[0] for u in updates], k)
    mean = combat.grand_mean(B_hat, ns)
    var_pooled = combat.pool_variance(
        site.residual_ss(X, Y, B_hat) for X, (_, Y) in zip(designs, sites, strict=True))
    return [site.adjust(X, Y, B_hat, mean, var_pooled, k, i)
            for i, (X, (_, Y)) in enumerate(zip(designs, sites, strict=True))]


def pooled(sites):
    """neuroCombat on the concatenated data (features x samples)."""
    Y = np.vstack([Y for _, Y in sites])
    covars = pd.DataFrame([{**row, "batch": i} for i, (rows, _) in enumerate(sites)
                           for row in rows])
    return neuroCombat(dat=Y.T, covars=covars, batch_col="batch",
                       categorical_cols=["sex", "diagnosis"], continuous_cols=["age"])


@pytest.fixture(scope="module")
def sites():
    return simulate()


@pytest.fixture(scope="module")
def both(sites):
    return distributed(sites), pooled(sites)


def test_design_is_neurocombats():
    rows = [{"age": 61.3, "sex": "male", "diagnosis": 1},
            {"age": 40.0, "sex": "female", "diagnosis": 0}]
    X = site.design(rows, 1, 3, SPEC)
    assert site.column_names(3, SPEC) == [
        "batch:0", "batch:1", "batch:2", "sex=male", "sex=other", "diagnosis=1", "age"]
    np.testing.assert_array_equal(X, [[0, 1, 0, 1, 0, 1, np.float32(61.3)],
                                      [0, 1, 0, 0, 0, 0, 40.0]])
    assert site.width(3, SPEC) == 7
    with pytest.raises(ValueError, match="outside its levels"):
        site.design([{"age": 1.0, "sex": "unknown", "diagnosis": 0}], 0, 3, SPEC)


def test_distributed_equals_pooled_neurocombat(both):
    results, reference = both
    harmonised = np.vstack([r[0] for r in results])
    difference = np.abs(harmonised - reference["data"].T).max()
    print(f"max |distributed - neuroCombat| = {difference:.3g}")
    assert difference < 1e-6
    estimates = reference["estimates"]
    np.testing.assert_allclose(np.array([r[1] for r in results]), estimates["gamma.star"],
                               rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.array([r[2] for r in results]), estimates["delta.star"],
                               rtol=1e-9, atol=1e-10)


def test_explicit_levels_and_an_unused_one():
    """Levels given in the spec, one of them no site has: the same numbers still."""
    sites = simulate(seed=11, sizes=(30, 45, 25))
    spec = {"diagnosis": [0, 1, 2], "age": "continuous", "sex": ["male", "female"]}
    results = distributed(sites, spec)
    Y = np.vstack([Y for _, Y in sites])
    covars = pd.DataFrame([{**row, "batch": f"site-{'abc'[i]}"}
                           for i, (rows, _) in enumerate(sites) for row in rows])
    reference = neuroCombat(dat=Y.T, covars=covars, batch_col="batch",
                            categorical_cols=["diagnosis", "sex"], continuous_cols=["age"])
    assert np.abs(np.vstack([r[0] for r in results]) - reference["data"].T).max() < 1e-6


def site_auc(sites, Ys) -> float:
    X = np.vstack(Ys)
    y = np.concatenate([np.full(len(rows), i) for i, (rows, _) in enumerate(sites)])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(model, X, y, cv=folds, scoring="roc_auc_ovr").mean())


def test_sites_are_no_longer_told_apart():
    sites = simulate(seed=3, shifted_ages=False)
    results = distributed(sites)
    before = site_auc(sites, [Y for _, Y in sites])
    after = site_auc(sites, [r[0] for r in results])
    print(f"site AUC before {before:.3f}, after {after:.3f}")
    assert before > 0.9
    assert after <= 0.6


def test_the_age_effect_survives(sites, both):
    results, _ = both
    age = np.concatenate([[r["age"] for r in rows] for rows, _ in sites])
    male = np.concatenate([[r["sex"] == "male" for r in rows] for rows, _ in sites])
    diagnosis = np.concatenate([[r["diagnosis"] for r in rows] for rows, _ in sites])
    indicators = np.vstack([np.eye(len(sites))[np.full(len(rows), i)]
                            for i, (rows, _) in enumerate(sites)])
    covariates = np.column_stack([age, male, diagnosis])
    raw = np.vstack([Y for _, Y in sites])
    with_sites, *_ = np.linalg.lstsq(np.column_stack([covariates, indicators]), raw,
                                     rcond=None)
    harmonised = np.vstack([r[0] for r in results])
    plain, *_ = np.linalg.lstsq(np.column_stack([covariates, np.ones(len(age))]),
                                harmonised, rcond=None)
    print("age coefficient, harmonised / with site indicators:", plain[0] / with_sites[0])
    np.testing.assert_allclose(plain[0], with_sites[0], rtol=0.05)
    np.testing.assert_allclose(plain[0], AGE_EFFECT, rtol=0.1)


def test_contracts():
    contracts = combat.contracts(7, 10)
    assert set(contracts) == {"moments", "variance", "adjust"}
    assert contracts["moments"].arrays["xtx"].shape == [7, 7]
    assert contracts["moments"].arrays["xty"].shape == [7, 10]
    assert contracts["variance"].arrays["ssr"].shape == [10]
    assert contracts["variance"].arrays["ssr"].min == 0
    adjust = contracts["adjust"]
    assert adjust.keep
    assert set(adjust.arrays) == {"gamma_star", "delta_star"}
    assert adjust.arrays["delta_star"].min == 0
    assert not contracts["moments"].keep
