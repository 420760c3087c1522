"""The sandbox's entry point of a distributed ComBat round (`python /code/step.py`):
reads the round (steplib.read_round), measures the extract's series and writes this
node's update (spe/wire/rounds.py says the files; spe/federated/combat.py the rounds).

round.json's config:

    {"batches": ["node-a", "node-b", ...],        the run's nodes, in batch order
     "covariates": {"age": "continuous", "sex": "categorical", "diagnosis": "categorical"},
                                                   (a categorical may list its levels)
     "diagnosis_codes": ["C71", ...],              ICD-10 prefixes: diagnosis 1
     "modality": "MR", "body_part": "BRAIN",       optional filters on the series
     "features": ["mean", ...]}                    of features.FEATURES, in this order

Kinds: "moments" -> xtx, xty; "variance" (input B_hat) -> ssr; "adjust" (inputs B_hat,
grand_mean, var_pooled) -> gamma_star, delta_star, and keep/features.csv (raw) and
keep/harmonised.csv, which stay at the node. One row per series whose covariates and
features are all known, sorted by SeriesInstanceUID, the same rows in every round. An
update's n is the number of patients behind those rows.

Imports numpy and pydicom only (with site.py, features.py and steplib.py beside it).
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import features  # noqa: E402
import steplib  # noqa: E402


def _load_site():
    # `import site` would give Python's own site module, imported at start-up.
    spec = importlib.util.spec_from_file_location("combat_site", HERE / "site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


combat_site = _load_site()

COLUMNS = ("series", "patient", "age", "sex", "diagnosis")


class StepError(Exception):
    pass


def feature_names(config: dict) -> list[str]:
    names = list(config.get("features") or features.FEATURES)
    unknown = [n for n in names if n not in features.FEATURES]
    if unknown or len(set(names)) != len(names):
        raise StepError(f"features must be distinct names of {features.FEATURES}")
    return names


def covariate_spec(config: dict) -> dict:
    spec = dict(config.get("covariates") or {})
    combat_site.columns(spec)  # checks it
    return spec


def _usable(covariates: dict, spec: dict) -> bool:
    categorical, continuous = combat_site.columns(spec)
    for name in continuous:
        value = covariates.get(name)
        if value is None or not np.isfinite(float(value)):
            return False
    return all(covariates.get(name) in levels for name, levels in categorical)


def table(extract: Path, config: dict) -> list[dict]:
    """The rows of this node: series, patient, covariates, features; sorted by series."""
    names = feature_names(config)
    spec = covariate_spec(config)
    index = [features.FEATURES.index(n) for n in names]
    clinical = features.read_clinical(extract / "fhir")
    rows = []
    for series in features.find_series(extract / "dicom", config.get("modality"),
                                       config.get("body_part")):
        covariates = features.series_covariates(series, clinical,
                                                config.get("diagnosis_codes") or ())
        if not _usable(covariates, spec):
            continue
        values = features.series_features(series)
        if values is None:
            continue
        rows.append({"series": series.uid, "patient": series.patient, **covariates,
                     **dict(zip(names, values[index].tolist(), strict=True))})
    return sorted(rows, key=lambda row: row["series"])


def write_csv(path: Path, rows: list[dict], names: list[str], values: np.ndarray) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*COLUMNS, *names])
        for row, line in zip(rows, values, strict=True):
            writer.writerow([*(("" if row[c] is None else row[c]) for c in COLUMNS),
                             *(repr(float(v)) for v in line)])


def run(meta: dict, arrays: dict, extract: Path) -> tuple[dict, int]:
    """The update's arrays and n for this round (and, for "adjust", the kept files)."""
    config = meta.get("config") or {}
    batches = list(config.get("batches") or [])
    if meta.get("node") not in batches:
        raise StepError("this node is not one of the run's batches")
    batch_index, n_batches = batches.index(meta["node"]), len(batches)
    spec = covariate_spec(config)
    names = feature_names(config)
    rows = table(extract, config)
    kind = meta.get("kind")
    if len(rows) < 2:
        # Too few to estimate anything: an empty update of the round's shapes with the
        # patients behind it, which the node's gate refuses in its own words (fewer
        # patients than its minimum) instead of a failed step.
        p, f = combat_site.width(n_batches, spec), len(names)
        shapes = {"moments": {"xtx": (p, p), "xty": (p, f)}, "variance": {"ssr": (f,)},
                  "adjust": {"gamma_star": (f,), "delta_star": (f,)}}.get(kind)
        if shapes is None:
            raise StepError(f"unknown round kind {kind!r}")
        return {k: np.zeros(v) for k, v in shapes.items()}, len({r["patient"] for r in rows})
    X = combat_site.design(rows, batch_index, n_batches, spec)
    Y = np.array([[row[n] for n in names] for row in rows], dtype=np.float64)
    n = len({row["patient"] for row in rows})
    if kind == "moments":
        xtx, xty, _ = combat_site.moments(X, Y)
        return {"xtx": xtx, "xty": xty}, n
    if kind == "variance":
        ssr, _ = combat_site.residual_ss(X, Y, _input(arrays, "B_hat"))
        return {"ssr": ssr}, n
    if kind == "adjust":
        harmonised, gamma_star, delta_star = combat_site.adjust(
            X, Y, _input(arrays, "B_hat"), _input(arrays, "grand_mean"),
            _input(arrays, "var_pooled"), n_batches, batch_index)
        keep = steplib.keep_dir()
        write_csv(keep / "features.csv", rows, names, Y)
        write_csv(keep / "harmonised.csv", rows, names, harmonised)
        return {"gamma_star": gamma_star, "delta_star": delta_star}, n
    raise StepError(f"unknown round kind {kind!r}")


def _input(arrays: dict, name: str) -> np.ndarray:
    if name not in arrays:
        raise StepError(f"the round's input has no {name}")
    return np.asarray(arrays[name], dtype=np.float64)


def main() -> int:
    meta, arrays = steplib.read_round()
    try:
        update, n = run(meta, arrays, steplib.EXTRACT)
    except StepError as exc:
        print(f"combat step: {exc}", file=sys.stderr)
        return 2
    steplib.write_update(update, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
