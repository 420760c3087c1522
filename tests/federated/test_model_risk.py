"""The model disclosure check (spe/federated/apps/model_risk.py, disclosure_step.py):
sacroml's worst-case, LiRA and attribute attacks, re-implemented with scikit-learn, tell a
memorising model ("review") from a well-regularised one ("pass"), report plain figures
only, and run as a sandbox step that imports nothing of `spe`."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

from spe.federated.apps import disclosure_step, model_risk  # noqa: E402
from spe.wire.rounds import MAX_METRICS, Contract  # noqa: E402

APPS = Path(model_risk.__file__).resolve().parent
FEATURES = ["sex", "age"]


def cohort(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sex (0/1), age (20-90) and d-2 other features; a noisy logistic outcome."""
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, n).astype(float)
    age = rng.uniform(20, 90, n)
    other = rng.normal(size=(n, d - 2))
    z = 0.8 * sex - 0.03 * (age - 55) + other[:, :3] @ np.array([1.0, -0.7, 0.5])
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return np.column_stack([sex, age, other]), y


def logistic(C: float):
    def fit(X, y):
        m = LogisticRegression(C=C, max_iter=5000).fit(X, y)
        return [m.coef_.ravel(), m.intercept_]
    return fit


def predict_proba(params, X):
    p = 1 / (1 + np.exp(-(np.asarray(X) @ params[0] + params[1][0])))
    return np.column_stack([1 - p, p])


def run(C: float, n_train: int, n_test: int, d: int, seed: int = 0, **kw):
    X, y = cohort(n_train + n_test, d, seed)
    fit = logistic(C)
    target = fit(X[:n_train], y[:n_train])
    return model_risk.report(fit, predict_proba, target, X[:n_train], y[:n_train],
                             X[n_train:], y[n_train:], attribute_index=0, **kw)


@pytest.fixture(scope="module")
def overfit():
    """An unregularised logistic regression on 80 records with 150 features: it
    separates its training set and so knows its members."""
    return run(1e4, 80, 80, 150)


@pytest.fixture(scope="module")
def regularised():
    return run(0.1, 1500, 500, 10)


def test_an_overfit_model_is_sent_for_review(overfit):
    assert overfit["verdict"] == "review"
    assert overfit["worst_case"]["AUC"] > 0.75  # 0.88 measured
    assert overfit["worst_case"]["P_HIGHER_AUC"] < 0.01
    # LiRA finds it too, and picks out members at a low false-positive rate
    assert overfit["lira"]["AUC"] > 0.75  # 0.90
    assert overfit["lira"]["TPR@1%"] > model_risk.MAX_LIRA_TPR_AT_1PCT  # 0.42
    assert overfit["lira"]["records"] == 160


def test_a_well_regularised_model_passes(regularised):
    assert regularised["verdict"] == "pass"
    assert abs(regularised["worst_case"]["AUC"] - 0.5) < 0.05  # 0.49 measured
    assert regularised["worst_case"]["P_HIGHER_AUC"] > 0.05
    assert abs(regularised["lira"]["AUC"] - 0.5) < 0.06
    assert regularised["lira"]["TPR@1%"] <= 0.05
    assert regularised["lira"]["records"] == 400  # capped: 200 non-members, 200 members


def test_an_unpruned_tree_is_sent_for_review():
    """Hard 0/1 outputs: the worst-case attack still sees the training records."""
    X, y = cohort(600, 10, 2)
    def fit(X, y):
        return DecisionTreeClassifier(random_state=0).fit(X, y)
    def proba(model, X):
        return model.predict_proba(X)
    rep = model_risk.report(fit, proba, fit(X[:300], y[:300]), X[:300], y[:300],
                            X[300:], y[300:])
    assert rep["verdict"] == "review"
    assert rep["worst_case"]["AUC"] > 0.65  # 0.70 measured
    assert rep["lira"]["AUC"] > 0.65


def test_the_thresholds_are_arguments(regularised):
    assert regularised["thresholds"] == {"max_worst_case_auc": 0.6,
                                         "max_lira_tpr_at_1pct": 0.05}
    strict = run(0.1, 1500, 500, 10, max_worst_case_auc=0.3)
    assert strict["verdict"] == "review"
    assert strict["thresholds"]["max_worst_case_auc"] == 0.3


def _leaves(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    else:
        yield value


@pytest.mark.parametrize("which", ["overfit", "regularised"])
def test_the_report_holds_only_plain_figures(which, request):
    rep = request.getfixturevalue(which)
    assert set(rep) == {"worst_case", "lira", "attribute_train", "attribute_test",
                        "thresholds", "n_members", "n_nonmembers", "verdict"}
    for leaf in _leaves(rep):
        assert type(leaf) in (float, str), leaf
        if type(leaf) is float:
            assert math.isfinite(leaf)
    assert json.loads(json.dumps(rep)) == rep
    # a summary, not a record list: a few dozen figures whatever the cohort's size
    assert len(list(_leaves(rep))) < 50


def test_it_is_deterministic_with_a_seed():
    assert run(1e4, 60, 60, 100, seed=3) == run(1e4, 60, 60, 100, seed=3)
    X, y = cohort(200, 50, 4)
    proba = predict_proba(logistic(1e4)(X[:100], y[:100]), X)
    a = model_risk.worst_case_attack(proba[:100], y[:100], proba[100:], y[100:], seed=1)
    b = model_risk.worst_case_attack(proba[:100], y[:100], proba[100:], y[100:], seed=2)
    assert a != b


def test_the_attribute_attack_stays_in_a_sane_range(overfit, regularised):
    for rep in (overfit, regularised):
        for part in ("attribute_train", "attribute_test"):
            a = rep[part]
            for key in ("accuracy", "accuracy_inferable", "baseline", "inferable_share"):
                assert 0 <= a[key] <= 1
            assert 0.45 <= a["baseline"] <= 0.6  # sex, about half and half
            assert a["advantage"] == pytest.approx(a["accuracy"] - a["baseline"])
            assert abs(a["advantage"]) < 0.2


def test_the_attribute_attack_reads_what_the_model_reveals():
    X, _ = cohort(300, 5, 5)
    sex, age = X[:, 0], X[:, 1]

    def reveals_sex(Z):  # the outcome is sex itself
        p = 1 / (1 + np.exp(-6 * (2 * Z[:, 0] - 1)))
        return np.column_stack([1 - p, p])

    def ignores(Z):
        return np.tile([0.3, 0.7], (len(Z), 1))

    def peaks_at_age(Z):  # most sure of outcome 1 at each record's own age (a lookup)
        p = np.exp(-np.abs(Z[:, 1] - np.repeat(age, len(Z) // len(age))))
        return np.column_stack([1 - p, p])

    y = sex.astype(int)
    told = model_risk.attribute_attack(reveals_sex, X, y, 0, [0.0, 1.0])
    assert told["accuracy"] == 1.0
    assert told["inferable_share"] == 1.0
    assert told["advantage"] == pytest.approx(1 - told["baseline"])
    blind = model_risk.attribute_attack(ignores, X, y, 0, [0.0, 1.0])
    assert blind["inferable_share"] == 0.0
    assert blind["accuracy"] == blind["baseline"]
    assert blind["advantage"] == 0.0

    ones = np.ones(len(X), int)
    by_age = model_risk.attribute_attack(peaks_at_age, X, ones, 1, continuous=True)
    assert by_age["accuracy"] > 0.95
    assert by_age["inferable_share"] > 0.95
    assert by_age["baseline"] < 0.5
    assert by_age["candidates"] == 100
    blind_age = model_risk.attribute_attack(ignores, X, ones, 1, continuous=True)
    assert blind_age["inferable_share"] == 0.0
    assert blind_age["advantage"] <= 0


def test_the_worst_case_metrics_follow_sacroml():
    # sacroml.metrics.auc_p_val: 1 - Phi((auc - 0.5) / sd), sd^2 = (n+ + n- + 1) / 12n+n-
    assert model_risk.auc_p_value(0.5, 40, 40) == pytest.approx(0.5)
    sd = math.sqrt(81 / (12 * 40 * 40))
    assert model_risk.auc_p_value(0.5 + 2 * sd, 40, 40) == pytest.approx(0.02275, abs=1e-4)
    labels = np.array([1] * 50 + [0] * 50)
    perfect = model_risk.mia_metrics(labels, labels.astype(float))
    assert perfect["AUC"] == 1
    assert perfect["TPR@1%"] == 1
    assert perfect["Advantage"] == 1
    assert set(perfect) == {"AUC", "TPR@10%", "TPR@1%", "Advantage", "P_HIGHER_AUC"}


# -- the sandbox step ----------------------------------------------------------------------

APP = '''
from pathlib import Path
import numpy as np
from sklearn.linear_model import LogisticRegression

FEATURES = ["sex", "age"] + [f"x{i}" for i in range(148)]


def load_extract(folder: Path):
    with np.load(folder / "cohort.npz") as f:
        return f["X_train"], f["y_train"], f["X_test"], f["y_test"]


def fit(X, y):
    m = LogisticRegression(C=1e4, max_iter=5000).fit(X, y)
    return [m.coef_.ravel(), m.intercept_]


def predict_proba(arrays, X):
    p = 1 / (1 + np.exp(-(X @ arrays[0] + arrays[1][0])))
    return np.column_stack([1 - p, p])
'''


def test_the_step_writes_figures_only(tmp_path):
    code, extract, output = tmp_path / "code", tmp_path / "extract", tmp_path / "output"
    (code / "app" / "riskapp").mkdir(parents=True)
    (code / "app" / "riskapp" / "__init__.py").write_text("")
    (code / "app" / "riskapp" / "task.py").write_text(APP)
    X, y = cohort(160, 150, 0)
    extract.mkdir()
    np.savez(extract / "cohort.npz", X_train=X[:80], y_train=y[:80], X_test=X[80:],
             y_test=y[80:])
    w, b = logistic(1e4)(X[:80], y[:80])
    (code / "_round").mkdir()
    np.savez(code / "_round" / "arrays.npz", weights=w, bias=b)
    (code / "_round" / "round.json").write_text(json.dumps({
        "run": "r1", "round": 9, "kind": "disclosure", "node": "n1",
        "config": {"task": "riskapp.task", "array_keys": ["weights", "bias"],
                   "attribute": "sex"}}))
    env = {**os.environ, "SPE_STEP_CODE": str(code), "SPE_STEP_EXTRACT": str(extract),
           "SPE_STEP_OUTPUT": str(output), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, str(APPS / "disclosure_step.py")],
                            cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in output.iterdir()) == ["update.json"]  # no arrays leave
    update = json.loads((output / "update.json").read_text())
    assert update["n"] == 160
    metrics = update["metrics"]
    assert set(metrics) == set(disclosure_step.METRICS)
    assert metrics["review"] == 1.0
    assert metrics["worst_case_auc"] > 0.75
    assert metrics["members"] == 80
    assert metrics["lira_records"] == 160
    assert all(isinstance(v, float) for v in metrics.values())
    # the hub's contract takes them, within their ranges
    specs = Contract(metrics=disclosure_step.metric_specs()).metrics
    for name, value in metrics.items():
        assert specs[name].min <= value <= specs[name].max


def test_the_step_names_fit_a_contract():
    assert len(disclosure_step.METRICS) <= MAX_METRICS
    assert len(set(disclosure_step.METRICS)) == len(disclosure_step.METRICS)
    assert all(name.replace("_", "").isalnum() for name in disclosure_step.METRICS)


@pytest.mark.parametrize("name", ["model_risk.py", "disclosure_step.py"])
def test_the_sandbox_code_is_self_contained(name):
    allowed = {"__future__", "collections", "typing", "importlib", "sys", "numpy",
               "scipy", "sklearn", "steplib", "model_risk"}
    tree = ast.parse((APPS / name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file travels alone"
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert roots <= allowed, roots
