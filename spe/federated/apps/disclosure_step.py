"""The model disclosure check as a round's step in the sandbox: the last step of a
federated training, at each hospital, next to its data (model_risk.py says what it
measures). Only the summary figures leave, as the update's metrics; no arrays.

It travels with `steplib.py` and `model_risk.py` next to it, and the researcher's app in
`/code/app` (put on sys.path). round.json's config:

    {"task": "package.module",     the app's module under /code/app
     "array_keys": ["w", "b"],     the final model's arrays (the round's input), in the
                                   order the app's hooks take them
     "attribute": "sex",           optional: a column to attack, by name in the app's
                                   FEATURES (a sequence of column names) or by index
     "attribute_values": [0, 1],   optional: its candidate values
     "attribute_continuous": false optional: by default, more than 20 distinct values
     "run_config": {...},          optional: the Flower app's run config, passed to
                                   load_extract as its second argument
     "seed", "repetitions", "shadows", "max_worst_case_auc", "max_lira_tpr_at_1pct"
                                   optional: model_risk.report's arguments}

The app's hooks:

    load_extract(Path("/extract")) -> (X_train, y_train, X_test, y_test)
    predict_proba(arrays_list, X) -> (n, 2) probabilities
    fit(X, y) -> arrays_list       (for LiRA's shadow models)

Members are the training records, non-members the test records; the update's n is all of
them. Its metrics are `METRICS` (the attribute's left out without an attribute), the
verdict as `review` (1 = "review", 0 = "pass").

Trust limit: the app's own hooks run in this process, with the check. A hostile app can
fake its figures (a `predict_proba` that answers the attacks differently from the model
it ships, a `load_extract` that hands over other records). The figures are evidence for
the two human output checkers, who see the app's code; not a proof.

Importable without steplib, model_risk or scikit-learn (the hub reads `METRICS` and
`metric_specs()` for the round's contract); they are imported when the step runs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# (name on the wire, the report's section, the figure's name in it, its range)
_FIGURES: tuple[tuple[str, str, str, float, float], ...] = (
    ("worst_case_auc", "worst_case", "AUC", 0, 1),
    ("worst_case_auc_std", "worst_case", "AUC_std", 0, 1),
    ("worst_case_tpr_at_fpr_10pct", "worst_case", "TPR@10%", 0, 1),
    ("worst_case_tpr_at_fpr_1pct", "worst_case", "TPR@1%", 0, 1),
    ("worst_case_advantage", "worst_case", "Advantage", -1, 1),
    ("worst_case_p_higher_auc", "worst_case", "P_HIGHER_AUC", 0, 1),
    ("worst_case_n_sig_auc_p_vals", "worst_case", "n_sig_auc_p_vals", 0, 1000),
    ("lira_auc", "lira", "AUC", 0, 1),
    ("lira_tpr_at_fpr_10pct", "lira", "TPR@10%", 0, 1),
    ("lira_tpr_at_fpr_1pct", "lira", "TPR@1%", 0, 1),
    ("lira_advantage", "lira", "Advantage", -1, 1),
    ("lira_p_higher_auc", "lira", "P_HIGHER_AUC", 0, 1),
    ("lira_offline_auc", "lira", "offline_AUC", 0, 1),
    ("lira_offline_tpr_at_fpr_1pct", "lira", "offline_TPR@1%", 0, 1),
    ("lira_records", "lira", "records", 0, 1e9),
    ("attribute_train_accuracy", "attribute_train", "accuracy", 0, 1),
    ("attribute_train_accuracy_inferable", "attribute_train", "accuracy_inferable", 0, 1),
    ("attribute_train_baseline", "attribute_train", "baseline", 0, 1),
    ("attribute_train_advantage", "attribute_train", "advantage", -1, 1),
    ("attribute_train_inferable_share", "attribute_train", "inferable_share", 0, 1),
    ("attribute_test_accuracy", "attribute_test", "accuracy", 0, 1),
    ("attribute_test_accuracy_inferable", "attribute_test", "accuracy_inferable", 0, 1),
    ("attribute_test_baseline", "attribute_test", "baseline", 0, 1),
    ("attribute_test_advantage", "attribute_test", "advantage", -1, 1),
    ("attribute_test_inferable_share", "attribute_test", "inferable_share", 0, 1),
    ("max_worst_case_auc", "thresholds", "max_worst_case_auc", 0, 1),
    ("max_lira_tpr_at_1pct", "thresholds", "max_lira_tpr_at_1pct", 0, 1),
    ("members", "", "n_members", 0, 1e9),
    ("review", "", "review", 0, 1),
)

#: The update's metrics (at most spe.wire.rounds.MAX_METRICS).
METRICS: tuple[str, ...] = tuple(f[0] for f in _FIGURES)

_REPORT_ARGS = ("seed", "repetitions", "shadows", "max_worst_case_auc",
                "max_lira_tpr_at_1pct")


def metric_specs() -> dict[str, dict[str, float]]:
    """The round contract's metrics: {name: {"min", "max"}}."""
    return {name: {"min": float(lo), "max": float(hi)} for name, _, _, lo, hi in _FIGURES}


def figures(report: dict[str, Any]) -> dict[str, float]:
    """The update's metrics of a model_risk.report: plain floats, nothing per record."""
    out: dict[str, float] = {}
    for name, section, key, _, _ in _FIGURES:
        if name == "review":
            out[name] = 0.0 if report["verdict"] == "pass" else 1.0
        elif not section:
            out[name] = float(report[key])
        elif section in report:
            out[name] = float(report[section][key])
    return out


def _attribute_index(config: dict[str, Any], app: Any) -> int | None:
    attribute = config.get("attribute")
    if attribute is None:
        return None
    if isinstance(attribute, int) and not isinstance(attribute, bool):
        return attribute
    names = list(getattr(app, "FEATURES", ()))
    if attribute not in names:
        raise SystemExit(f"the app's FEATURES do not name the attribute {attribute!r}")
    return names.index(attribute)


def main() -> None:
    # model_risk and steplib travel next to this step (the sandbox's /code)
    import model_risk
    import numpy as np
    import steplib

    meta, arrays = steplib.read_round()
    config = meta.get("config", {})
    sys.path.insert(0, str(steplib.CODE / "app"))
    app = importlib.import_module(config["task"])
    keys = config["array_keys"]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise SystemExit(f"the round's input has no arrays {missing}")
    target = [arrays[k] for k in keys]

    run_config = config.get("run_config")
    X_train, y_train, X_test, y_test = (app.load_extract(steplib.EXTRACT, run_config)
                                        if run_config else app.load_extract(steplib.EXTRACT))
    X_train, X_test = np.asarray(X_train, np.float64), np.asarray(X_test, np.float64)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)

    values = config.get("attribute_values")
    rep = model_risk.report(
        app.fit, app.predict_proba, target, X_train, y_train, X_test, y_test,
        attribute_index=_attribute_index(config, app),
        attribute_values=None if values is None else [float(v) for v in values],
        attribute_continuous=config.get("attribute_continuous"),
        **{k: config[k] for k in _REPORT_ARGS if k in config})
    steplib.write_update({}, len(X_train) + len(X_test), figures(rep))


if __name__ == "__main__":
    main()
