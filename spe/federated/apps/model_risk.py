"""What a trained model discloses about its training records, measured at the hospital
before the model goes to the output airlock, in the manner of SACRO-ML (sacroml).

**Model disclosure check.** A model trained by federated learning leaves a hospital only
through the output airlock, and before it does an automatic check runs three attacks in
the hospital's sandbox, next to the data, and sends only their summary figures with the
model, as evidence for the two human output checkers:

- *Worst-case membership inference* (sacroml's `WorstCaseAttack`): the attacker holds
  the model's predicted probabilities for records it knows were in the training set and
  for records it knows were not, and trains a classifier (a random forest) to tell them
  apart from those probabilities alone. Its AUC on held-out records (0.5 is chance), its
  true-positive rate at false-positive rates of 10 % and 1 %, its advantage (TPR - FPR)
  and the AUC's p-value against chance measure how much the model's outputs give away
  membership. It is "worst case" because the attacker is handed the very records and
  labels an outsider would have to guess.
- *Likelihood-ratio attack* (LiRA, Carlini et al. 2022, "Membership Inference Attacks
  From First Principles"; sacroml's `LIRAAttack`): shadow models are retrained on random
  halves of the pooled records, so each record's confidence is seen both from models
  that trained on it and from models that did not; a Gaussian fit of each gives a
  per-record likelihood ratio for the real model's confidence. It is the strongest
  black-box test of whether the model remembers *individual* records, and its TPR at a
  1 % false-positive rate is the figure that counts: a few records confidently exposed
  matter even when the average-case AUC looks harmless.
- *Attribute inference* (sacroml's `AttributeAttack`): for each record the attacker
  knows every feature but one (sex, age) and the outcome, tries every value of the
  missing one and keeps the value under which the model is most confident of the true
  outcome. Its accuracy against the baseline of always guessing the commonest value,
  and the share of records for which one value stands out, measure whether the model
  lets the attribute be read back.

The verdict is "pass" when the worst-case AUC is at most 0.6 and LiRA's TPR at 1 % FPR
at most 0.05, else "review". Both limits are this project's policy, not sacroml's (which
reports the figures and their significance and leaves the decision to the checker): an
AUC of 0.6 leaves a margin above chance for the sampling noise of a hospital-sized test
set, and a TPR of 0.05 at 1 % FPR is five times what blind guessing gets there. "review"
does not block the model: it tells the checkers to look. sacroml itself is not used,
because sacroml 2.0.1 requires torch (a GPU stack for every hospital's sandbox and for
CI); these attacks are re-implemented with numpy, scipy and scikit-learn, following
sacroml's source, with its metric names (`AUC`, `TPR@10%`, `P_HIGHER_AUC`, ...).

This module runs inside the sandbox (the disclosure step): numpy, scipy and scikit-learn
only, never `spe`. No figure it reports names or describes a single record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import norm
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split

#: The verdict's limits (see the module's docstring for their rationale).
MAX_WORST_CASE_AUC = 0.6
MAX_LIRA_TPR_AT_1PCT = 0.05

#: The false-positive rates the TPR is reported at, with sacroml's names for them.
FPRS = {"TPR@10%": 0.1, "TPR@1%": 0.01}

# sacroml's default random forest for the worst-case attack (_DEFAULT_RF_PARAMS).
_RF_PARAMS = {"min_samples_split": 20, "min_samples_leaf": 10, "max_depth": 5}
_EPS = 1e-16  # sacroml's clip of probabilities before the logit
_STD_FLOOR = 1e-4  # a Gaussian of zero spread (a record every shadow gets right) still fits


# -- the metrics (sacroml.metrics) ---------------------------------------------------------

def auc_p_value(auc: float, n_pos: int, n_neg: int) -> float:
    """P(AUC >= `auc`) for an attack that guesses at random (sacroml's `P_HIGHER_AUC`):
    the AUC is the Mann-Whitney U statistic over n_pos * n_neg, whose null distribution
    is close to normal with mean 0.5 and variance (n_pos + n_neg + 1) / (12 n_pos n_neg)
    (sacroml's `_expected_auc_var` at 0.5)."""
    if n_pos < 1 or n_neg < 1:
        return 1.0
    std = np.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))
    return float(norm.sf(auc, loc=0.5, scale=std))


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The highest TPR of a threshold whose FPR is at most `fpr` (no interpolation: a rate
    some threshold of the attack does reach)."""
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(tprs[fprs <= fpr + 1e-12].max())


def mia_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC, TPR at low FPR, advantage and the AUC's p-value of membership scores (higher
    = more likely a member) against the truth (1 = member)."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    fprs, tprs, _ = roc_curve(labels, scores)
    auc = float(roc_auc_score(labels, scores))
    n_pos = int(labels.sum())
    out = {"AUC": auc}
    out.update({name: tpr_at_fpr(labels, scores, fpr) for name, fpr in FPRS.items()})
    out["Advantage"] = float(np.max(tprs - fprs))
    out["P_HIGHER_AUC"] = auc_p_value(auc, n_pos, len(labels) - n_pos)
    return out


def _true_class(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y).astype(int)
    if proba.ndim != 2 or len(proba) != len(y):
        raise ValueError("probabilities must be one row per record")
    if y.min(initial=0) < 0 or y.max(initial=0) >= proba.shape[1]:
        raise ValueError("labels must be class indices 0..k-1 of the probabilities' columns")
    return proba[np.arange(len(y)), y]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _cap(rng: np.random.Generator, n: int, cap: int | None) -> np.ndarray:
    if cap is None or n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, cap, replace=False))


# -- worst case ----------------------------------------------------------------------------

def worst_case_attack(proba_members: np.ndarray, y_members: np.ndarray,
                      proba_nonmembers: np.ndarray, y_nonmembers: np.ndarray, *,
                      repetitions: int = 5, seed: int = 0, test_prop: float = 0.2,
                      include_true_class: bool = True, p_thresh: float = 0.05,
                      max_records: int | None = 20_000) -> dict[str, float]:
    """sacroml's worst-case membership inference from the model's probabilities.

    The attack's features are each record's predicted probabilities sorted descending (as
    sacroml's `sort_probs`), with `include_true_class` also the probability given to the
    record's true label (sacroml's `include_model_correct_feature` adds only whether the
    prediction was right; the confidence in the truth is the stronger, worst-case form).
    A random forest with sacroml's default settings learns member (1) / non-member (0)
    on a stratified split, `repetitions` times on different splits (`test_prop` held out);
    the figures are the means over the repetitions. `P_HIGHER_AUC` is the p-value of the
    mean AUC against chance at one split's test size (conservative: the mean of several
    splits varies less); `n_sig_auc_p_vals` counts the repetitions whose own AUC is
    significant at `p_thresh` (sacroml's global metric). `Advantage` is the largest
    TPR - FPR over the attack's thresholds (sacroml's is at its 0.5 threshold, so never
    more). At most `max_records` of each side are used, drawn at random.
    """
    if repetitions < 1:
        raise ValueError("repetitions must be at least 1")
    rng = np.random.default_rng(seed)
    pm = np.asarray(proba_members, dtype=np.float64)
    pn = np.asarray(proba_nonmembers, dtype=np.float64)
    keep_m, keep_n = _cap(rng, len(pm), max_records), _cap(rng, len(pn), max_records)

    def features(proba: np.ndarray, y: np.ndarray, keep: np.ndarray) -> np.ndarray:
        proba = proba[keep]
        cols = [-np.sort(-proba, axis=1)]
        if include_true_class:
            cols.append(_true_class(proba, np.asarray(y)[keep])[:, None])
        return np.hstack(cols)

    x = np.vstack((features(pm, y_members, keep_m), features(pn, y_nonmembers, keep_n)))
    labels = np.concatenate((np.ones(len(keep_m), int), np.zeros(len(keep_n), int)))
    if min(len(keep_m), len(keep_n)) < 5:
        raise ValueError("the worst-case attack needs at least 5 members and 5 non-members")

    reps: list[dict[str, float]] = []
    for rep in range(repetitions):
        split_seed = int(np.random.SeedSequence([seed, rep]).generate_state(1)[0])
        train, test = train_test_split(np.arange(len(labels)), test_size=test_prop,
                                       stratify=labels, random_state=split_seed)
        attack = RandomForestClassifier(**_RF_PARAMS, random_state=split_seed, n_jobs=1)
        attack.fit(x[train], labels[train])
        reps.append(mia_metrics(labels[test], attack.predict_proba(x[test])[:, 1]))
        n_pos_test = int(labels[test].sum())
        n_neg_test = len(test) - n_pos_test

    out = {name: float(np.mean([r[name] for r in reps])) for name in reps[0]}
    out["AUC_std"] = float(np.std([r["AUC"] for r in reps]))
    out["P_HIGHER_AUC"] = auc_p_value(out["AUC"], n_pos_test, n_neg_test)
    out["n_sig_auc_p_vals"] = float(sum(r["P_HIGHER_AUC"] <= p_thresh for r in reps))
    out["repetitions"] = float(repetitions)
    return out


# -- LiRA ----------------------------------------------------------------------------------

def lira_attack(fit: Callable[[np.ndarray, np.ndarray], Any],
                predict_proba: Callable[[Any, np.ndarray], np.ndarray],
                X_members: np.ndarray, y_members: np.ndarray,
                X_nonmembers: np.ndarray, y_nonmembers: np.ndarray, *, target: Any,
                shadows: int = 8, seed: int = 0, max_records: int | None = 400,
                fix_variance: bool = True) -> dict[str, float]:
    """LiRA (Carlini et al. 2022), online, as sacroml's `LIRAAttack(mode="online-carlini")`.

    `target` is the model under test (what `fit` returns and `predict_proba(params, X)`
    takes: the app's parameters). The members and non-members are pooled (at most
    `max_records` of them, drawn at random: non-members up to half, members the rest, as
    the TPR at 1 % FPR needs non-members to rank against) and `shadows` models are fitted
    with `fit` on random halves of the pool, in complementary pairs, so every record is
    IN exactly half the shadows and OUT of the other half. For each record the logit of
    the confidence in its true label, log(p / (1 - p)), is collected under IN and OUT
    shadows; a Gaussian is fitted to each (with `fix_variance`, one spread pooled over the
    records, as Carlini et al. advise for few shadows, and sacroml's `fix_variance`), and
    the record's score is log N(t; IN) - log N(t; OUT) for the target model's logit t.
    The figures are `mia_metrics` of those scores against the truth, plus sacroml's
    default offline test (how far t lies above the OUT Gaussian alone) as `offline_AUC`
    and `offline_TPR@1%`.

    The shadows train on half the pool, which is not the target's training set size;
    with `max_records` capping the pool they see fewer records than the target did, and
    so overfit more than it: the attack then errs towards finding less than there is in
    a well-regularised model and still finds a memorising one. The TPR at 1 % FPR has
    a resolution of one non-member in `records`: under 100 non-members it is the share of
    members ranked above every non-member. A model whose outputs are hard 0/1 (an
    unpruned tree) ties many records at the top, where LiRA then finds little; the
    worst-case attack still sees it.
    """
    shadows = int(shadows)
    if shadows < 2 or shadows % 2:
        raise ValueError("shadows must be an even number, at least 2")
    rng = np.random.default_rng(seed)
    Xm, Xn = np.asarray(X_members, np.float64), np.asarray(X_nonmembers, np.float64)
    ym, yn = np.asarray(y_members).astype(int), np.asarray(y_nonmembers).astype(int)
    if max_records is not None and len(Xm) + len(Xn) > max_records:
        n_n = min(len(Xn), max_records // 2)
        keep_m, keep_n = _cap(rng, len(Xm), max_records - n_n), _cap(rng, len(Xn), n_n)
        Xm, ym, Xn, yn = Xm[keep_m], ym[keep_m], Xn[keep_n], yn[keep_n]
    if min(len(Xm), len(Xn)) < 2:
        raise ValueError("LiRA needs at least 2 members and 2 non-members")
    X = np.vstack((Xm, Xn))
    y = np.concatenate((ym, yn))
    labels = np.concatenate((np.ones(len(Xm), int), np.zeros(len(Xn), int)))
    n = len(X)

    logits = np.empty((shadows, n))
    inside = np.zeros((shadows, n), bool)
    for pair in range(shadows // 2):
        half = np.zeros(n, bool)
        half[rng.permutation(n)[: n // 2]] = True
        for k, rows in ((2 * pair, half), (2 * pair + 1, ~half)):
            params = fit(X[rows], y[rows])
            logits[k] = _logit(_true_class(predict_proba(params, X), y))
            inside[k] = rows
    t = _logit(_true_class(predict_proba(target, X), y))

    def gaussian(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = mask.sum(axis=0)
        mean = np.where(mask, logits, 0).sum(axis=0) / count
        var = np.where(mask, (logits - mean) ** 2, 0).sum(axis=0) / count
        std = np.full(n, np.sqrt(var.mean())) if fix_variance else np.sqrt(var)
        return mean, np.maximum(std, _STD_FLOOR)

    in_mean, in_std = gaussian(inside)
    out_mean, out_std = gaussian(~inside)
    online = norm.logpdf(t, in_mean, in_std) - norm.logpdf(t, out_mean, out_std)
    offline = norm.logcdf(t, out_mean, out_std)  # higher: t further above the OUT fit
    out = mia_metrics(labels, online)
    off = mia_metrics(labels, offline)
    out["offline_AUC"] = off["AUC"]
    out["offline_TPR@1%"] = off["TPR@1%"]
    out["shadows"] = float(shadows)
    out["records"] = float(n)
    return out


# -- attribute inference -------------------------------------------------------------------

def attribute_attack(predict_proba: Callable[[np.ndarray], np.ndarray], X: np.ndarray,
                     y: np.ndarray, attribute_index: int,
                     values: Sequence[float] | np.ndarray | None = None, *,
                     continuous: bool | None = None, tolerance: float = 0.1,
                     grid: int = 100, max_records: int | None = 2000,
                     seed: int = 0) -> dict[str, float]:
    """Attribute inference of column `attribute_index` of `X`, as sacroml's.

    For each record every candidate value is put in the column and the candidate under
    which `predict_proba(X)` gives the record's true label `y` the highest probability is
    the attacker's guess.

    Categorical (candidates `values`, by default the column's distinct values): a record
    is *inferable* when one candidate has a unique highest confidence (sacroml's
    `_unique_max`); `accuracy` is the share of all records guessed right (a tie guesses
    the commonest value), `accuracy_inferable` the share right among the inferable ones
    (sacroml's figure; the baseline when none is), `baseline` the commonest value's
    share, `advantage` accuracy - baseline.

    Continuous (`continuous`, or more than 20 distinct values; candidates `values` or
    `grid` points from the column's minimum to its maximum): the guess is the middle of
    the candidates of peak confidence; it is right when within `tolerance` (relative,
    sacroml's `protection_limit`) of the true value; the baseline is the share of records
    the best single guess gets within the tolerance; a record is inferable when its
    true value is at least as confident as every candidate and the whole peak lies
    within the tolerance (sacroml's "at risk" bounds; sacroml asks for equal confidence,
    which a true value off the grid seldom meets).

    At most `max_records` records are tried (drawn at random with `seed`): the model
    is asked about records x candidates rows.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(int)
    keep = _cap(np.random.default_rng(seed), len(X), max_records)
    X, y = X[keep], y[keep]
    column = X[:, attribute_index]
    n = len(X)
    if n == 0:
        raise ValueError("no records")
    if continuous is None:
        continuous = len(np.unique(column)) > 20
    if values is None:
        values = (np.linspace(column.min(), column.max(), grid) if continuous
                  else np.unique(column))
    values = np.asarray(values, dtype=np.float64)
    k = len(values)
    if k < 2:
        raise ValueError("the attribute needs at least two candidate values")

    trial = np.repeat(X, k, axis=0)
    trial[:, attribute_index] = np.tile(values, n)
    conf = _true_class(predict_proba(trial), np.repeat(y, k)).reshape(n, k)
    peak = conf.max(axis=1, keepdims=True)
    at_peak = np.isclose(conf, peak, rtol=0, atol=1e-12)

    if not continuous:
        distinct, counts = np.unique(column, return_counts=True)
        commonest = distinct[np.argmax(counts)]
        baseline = counts.max() / n
        inferable = at_peak.sum(axis=1) == 1
        guess = np.where(inferable, values[np.argmax(conf, axis=1)], commonest)
        right = guess == column
        acc_inferable = right[inferable].mean() if inferable.any() else baseline
        return {"accuracy": float(right.mean()), "accuracy_inferable": float(acc_inferable),
                "baseline": float(baseline), "advantage": float(right.mean() - baseline),
                "inferable_share": float(inferable.mean()), "candidates": float(k)}

    first = np.argmax(at_peak, axis=1)
    last = k - 1 - np.argmax(at_peak[:, ::-1], axis=1)
    lo, hi = values[first], values[last]
    guess = (lo + hi) / 2
    limit = tolerance * np.abs(column)
    right = np.abs(guess - column) <= limit
    within = np.abs(values[None, :] - column[:, None]) <= limit[:, None]
    baseline = within.mean(axis=0).max()
    own = _true_class(predict_proba(X), y)
    inferable = ((own >= peak[:, 0] - 1e-12)
                 & (lo >= column - limit) & (hi <= column + limit))
    acc_inferable = right[inferable].mean() if inferable.any() else baseline
    return {"accuracy": float(right.mean()), "accuracy_inferable": float(acc_inferable),
            "baseline": float(baseline), "advantage": float(right.mean() - baseline),
            "inferable_share": float(inferable.mean()), "candidates": float(k)}


# -- the report ----------------------------------------------------------------------------

def report(fit: Callable[[np.ndarray, np.ndarray], Any],
           predict_proba: Callable[[Any, np.ndarray], np.ndarray], target: Any,
           X_train: np.ndarray, y_train: np.ndarray,
           X_test: np.ndarray, y_test: np.ndarray, *,
           attribute_index: int | None = None,
           attribute_values: Sequence[float] | None = None,
           attribute_continuous: bool | None = None,
           max_worst_case_auc: float = MAX_WORST_CASE_AUC,
           max_lira_tpr_at_1pct: float = MAX_LIRA_TPR_AT_1PCT,
           repetitions: int = 5, shadows: int = 8, seed: int = 0,
           lira_records: int | None = 400) -> dict[str, Any]:
    """All three attacks on the model `target` (members = the training records,
    non-members = the test records) and the verdict.

    {"worst_case": {figure: float}, "lira": {...}, "attribute_train": {...},
     "attribute_test": {...} (with an attribute), "thresholds": {...}, "n_members",
     "n_nonmembers", "verdict": "pass" | "review"}: every figure a plain float, the
    verdict a string; nothing of any single record.

    `max_worst_case_auc` (0.6) and `max_lira_tpr_at_1pct` (0.05) are the verdict's
    limits; see the module's docstring for why these defaults.
    """
    X_train, X_test = np.asarray(X_train, np.float64), np.asarray(X_test, np.float64)
    y_train, y_test = np.asarray(y_train).astype(int), np.asarray(y_test).astype(int)
    proba_train = np.asarray(predict_proba(target, X_train), np.float64)
    proba_test = np.asarray(predict_proba(target, X_test), np.float64)
    out: dict[str, Any] = {
        "worst_case": worst_case_attack(proba_train, y_train, proba_test, y_test,
                                        repetitions=repetitions, seed=seed),
        "lira": lira_attack(fit, predict_proba, X_train, y_train, X_test, y_test,
                            target=target, shadows=shadows, seed=seed,
                            max_records=lira_records),
    }
    if attribute_index is not None:
        def model(X: np.ndarray) -> np.ndarray:
            return predict_proba(target, X)
        for name, X, y in (("attribute_train", X_train, y_train),
                           ("attribute_test", X_test, y_test)):
            out[name] = attribute_attack(model, X, y, attribute_index, attribute_values,
                                         continuous=attribute_continuous, seed=seed)
    out["thresholds"] = {"max_worst_case_auc": float(max_worst_case_auc),
                         "max_lira_tpr_at_1pct": float(max_lira_tpr_at_1pct)}
    out["n_members"] = float(len(X_train))
    out["n_nonmembers"] = float(len(X_test))
    passed = (out["worst_case"]["AUC"] <= max_worst_case_auc
              and out["lira"]["TPR@1%"] <= max_lira_tpr_at_1pct)
    out["verdict"] = "pass" if passed else "review"
    return out


def flatten(rep: dict[str, Any]) -> dict[str, float]:
    """The report's figures as one level of names ("worst_case.AUC"), the verdict as
    `review` (1.0 for "review", 0.0 for "pass")."""
    flat: dict[str, float] = {}
    for key, value in rep.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": float(v) for name, v in value.items()})
        elif key == "verdict":
            flat["review"] = 0.0 if value == "pass" else 1.0
        else:
            flat[key] = float(value)
    return flat
