"""Distributed ComBat over a federation of real nodes, driven by the hub (`POST
/api/v1/fed/runs`, app "combat"): equal to neuroCombat run centrally on the pooled
features with the same covariates, the batch effect gone (a site classifier at chance),
the covariate effects kept; the result in the airlock with the count behind each
estimate; every round audited at the hub and at the nodes. On SQLite and PostgreSQL
(the central database, where runs, rounds, the airlock and the audit are kept)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from neuroCombat import neuroCombat
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spe.federated.apps.combat.features import FEATURES
from tests.federated.conftest import hub_audit
from tests.gateway.conftest import SITES

pytestmark = pytest.mark.usefixtures("needs_sandbox")

CONFIG = {"covariates": {"age": "continuous", "sex": "categorical",
                         "diagnosis": "categorical"},
          "diagnosis_codes": ["J44"], "modality": "DX", "body_part": "CHEST"}


def run_combat(hub, permit: str, **extra) -> dict:
    body = {"permit": permit, "app": "combat", "config": CONFIG, **extra}
    resp = hub.post("/api/v1/fed/runs", json=body, headers=hub.as_("carol", "researcher"))
    assert resp.status_code == 202, resp.text
    return wait(hub, resp.json()["id"])


def wait(hub, run_id: str, seconds: float = 600) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        resp = hub.get(f"/api/v1/fed/runs/{run_id}", headers=hub.as_("carol", "researcher"))
        assert resp.status_code == 200, resp.text
        run = resp.json()
        if run["state"] != "running" or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


def kept(root: Path, run_id: str, name: str) -> pd.DataFrame:
    """What every node kept of the run (`/extract/derived/<run>/<name>`), pooled."""
    frames = []
    for site in SITES:
        [path] = (root / "extracts" / site).glob(f"*/*/derived/{run_id}/{name}")
        frame = pd.read_csv(path)
        frame.insert(0, "site", site)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def site_auc(frame: pd.DataFrame, columns: list[str]) -> float:
    """One-vs-rest ROC AUC of a cross-validated classifier of the site on the features."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    proba = cross_val_predict(model, frame[columns].to_numpy(), frame["site"].to_numpy(),
                              cv=folds, method="predict_proba")
    return float(roc_auc_score(frame["site"].to_numpy(), proba, multi_class="ovr"))


def age_fit(frame: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Age's coefficient per feature, and its t statistic, in the fit of the features on
    age, sex, diagnosis and the sites' indicators."""
    design = pd.get_dummies(frame[["site"]], drop_first=True).astype(float)
    design.insert(0, "age", frame["age"].astype(float))
    design.insert(1, "male", (frame["sex"] == "male").astype(float))
    design.insert(2, "diagnosis", frame["diagnosis"].astype(float))
    design.insert(0, "intercept", 1.0)
    X, Y = design.to_numpy(), frame[columns].to_numpy()
    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    sigma2 = ((Y - X @ beta) ** 2).sum(axis=0) / (len(X) - X.shape[1])
    se = np.sqrt(sigma2 * np.linalg.inv(X.T @ X)[1, 1])
    return beta[1], beta[1] / se


@pytest.fixture(scope="module")
def combat_run(fed_central):
    hub, _, _, root, permit = fed_central
    return run_combat(hub, permit), root


def test_the_run_goes_three_rounds_at_every_node(combat_run):
    run, _ = combat_run
    assert run["state"] == "succeeded", (run["reason"], run["rounds"])
    assert [r["kind"] for r in run["rounds"]] == ["moments", "variance", "adjust"]
    for r in run["rounds"]:
        assert {n: s["state"] for n, s in r["nodes"].items()} == dict.fromkeys(
            SITES, "accepted")
    assert run["rounds"][-1]["metrics"]["batch_effect"] > 0
    assert run["airlock"]


def test_distributed_combat_equals_pooled_neurocombat(combat_run):
    run, root = combat_run
    raw = kept(root, run["id"], "features.csv")
    harmonised = kept(root, run["id"], "harmonised.csv")
    assert list(raw["series"]) == list(harmonised["series"])
    columns = [c for c in FEATURES if c in raw.columns]
    covars = raw[["site", "age", "sex", "diagnosis"]].copy()
    expected = neuroCombat(dat=raw[columns].to_numpy().T, covars=covars, batch_col="site",
                           categorical_cols=["sex", "diagnosis"],
                           continuous_cols=["age"])["data"].T
    difference = np.max(np.abs(expected - harmonised[columns].to_numpy()))
    print(f"\n{len(raw)} series at {raw['site'].nunique()} sites, {len(columns)} features: "
          f"largest difference from the pooled neuroCombat {difference:.2e}")
    assert difference < 1e-6, difference
    # The batch effect goes: the sites were told apart, now they are not.
    before, after = site_auc(raw, columns), site_auc(harmonised, columns)
    print(f"site classifier ROC AUC: {before:.3f} before, {after:.3f} after")
    assert before > 0.9, before
    assert after <= 0.6, after
    # ... and the covariates' effects stay: age's coefficient in the fit of the features on
    # age, sex, diagnosis and the sites' indicators, harmonised against unharmonised, within
    # 5% for the mean intensity (the feature the synthetic radiographs' age effect is drawn
    # in) and for every feature age moves strongly (|t| >= 20: the intensity levels and two
    # texture features). Not asserted where age's effect is weak or is in a shape moment
    # (skewness, |t| about 12, moves about 11%): a scanner's gain and blur change a
    # distribution's shape, not only its location and scale, so rescaling a site's residuals
    # (ComBat's model) moves such a feature's slope; the ratios are printed for all.
    (b_raw, t_raw), (b_harm, _) = age_fit(raw, columns), age_fit(harmonised, columns)
    ratio = b_harm / b_raw
    print("age coefficient, harmonised / unharmonised (t): " + ", ".join(
        f"{c} {r:.4f} ({t:.0f})" for c, r, t in zip(columns, ratio, t_raw, strict=True)))
    mean = columns.index("mean")
    assert abs(t_raw[mean]) >= 20, t_raw[mean]
    strong = np.abs(t_raw) >= 20
    assert strong.sum() >= 4, dict(zip(columns, t_raw, strict=True))
    assert np.all(np.abs(ratio[strong] - 1) <= 0.05), dict(
        zip(np.array(columns)[strong], ratio[strong], strict=True))


def test_the_estimates_reach_the_airlock_with_their_counts(fed_central, combat_run):
    hub = fed_central[0]
    run, _ = combat_run
    resp = hub.get(f"/api/v1/fed/runs/{run['id']}/outputs",
                   headers=hub.as_("carol", "researcher"))
    assert resp.status_code == 200, resp.text
    [request] = resp.json()
    assert request["state"] == "pending"  # two output checkers first
    checker = hub.as_("olga", "output_checker")
    full = hub.get(f"/api/v1/airlock/requests/{request['id']}", headers=checker)
    assert full.status_code == 200, full.text
    files = {f["name"]: f for f in full.json()["files"]}
    assert sorted(files) == ["hub/combat_estimates.json", "hub/disclosure.json",
                             "hub/rounds.json"], sorted(files)
    assert all(f["stored"] for f in files.values()), {
        n: (f.get("verdict"), f.get("reasons")) for n, f in files.items() if not f["stored"]}
    shown = hub.get(f"/api/v1/airlock/requests/{request['id']}/inspect/"
                    "hub/disclosure.json", headers=checker)
    if shown.status_code == 200:
        assert "the count of patients behind each estimate" in shown.text


def test_every_round_is_audited(fed_central, combat_run):
    hub = fed_central[0]
    run, _ = combat_run
    mine = [(e["action"], e["object"]) for e in hub_audit(hub) if e["object"].startswith(
        f"fed:{run['id']}")]
    assert ("fed.start", f"fed:{run['id']}") in mine
    assert [o for a, o in mine if a == "fed.round"] == [
        f"fed:{run['id']}/{n}" for n in (1, 2, 3)]
    assert ("fed.finish", f"fed:{run['id']}") in mine
