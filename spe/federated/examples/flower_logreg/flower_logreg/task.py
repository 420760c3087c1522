"""flower_logreg: the model, its training and the data of an extract.

A logistic regression predicting whether a patient has a condition (an ICD-10 Condition in
fhir/Condition.ndjson whose code starts with the run config's `condition`, a glioma C71 by
default) from one row per patient: their first image series (dicom/, of the run config's
`modality` and `body-part`, by series UID): the pixels' mean, standard deviation, 10th, 50th
and 90th percentiles and a texture contrast, as fractions of the image's full scale, and
the patient's age and sex (DICOM header, else FHIR Patient). One row per patient, and the
train/test split by the hash of the patient, so no patient is on both sides and a reply's
`num-examples` counts patients (the node gate's minimum). Fitted by Newton's method from
zeros (`gradient_hessian`, `newton_step`), deterministic throughout. The hooks the SPE
calls: `load_extract`, `predict_proba`, `fit`.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

FEATURES = ["mean", "std", "p10", "p50", "p90", "contrast", "age", "sex"]
GLIOMA = "C71"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
TEST_SHARE = 0.2
DEFAULTS = {
    "modality": "MR", "body-part": "", "condition": GLIOMA, "l2": 0.01,
    "feature-center": "0.25,0.26,0.014,0.08,0.6,0.06,55,0.5",
    "feature-scale": "0.015,0.02,0.01,0.01,0.04,0.01,15,0.5",
}


# The data.
def _ndjson(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fhir(extract_dir: Path, prefix: str = GLIOMA) -> tuple[dict[str, dict], set[str]]:
    """(Patient by each id and identifier value, the Patient ids with the condition)."""
    patients: dict[str, dict] = {}
    for patient in _ndjson(extract_dir / "fhir" / "Patient.ndjson"):
        patients[str(patient.get("id"))] = patient
        for identifier in patient.get("identifier", []):
            if identifier.get("value"):
                patients[str(identifier["value"])] = patient
    glioma = set()
    for condition in _ndjson(extract_dir / "fhir" / "Condition.ndjson"):
        codes = [c.get("code", "") for c in condition.get("code", {}).get("coding", [])
                 if c.get("system", ICD10) == ICD10]
        if any(str(code).startswith(prefix) for code in codes):
            glioma.add(str(condition.get("subject", {}).get("reference", ""))
                       .removeprefix("Patient/"))
    return patients, glioma


def _age(ds, patient: dict | None) -> float:
    text = str(getattr(ds, "PatientAge", "") or "")
    if len(text) == 4 and text[:3].isdigit():
        return float(int(text[:3]) * {"Y": 1, "M": 1 / 12, "W": 1 / 52, "D": 1 / 365}
                     .get(text[3], 1))
    born = str(getattr(ds, "PatientBirthDate", "") or "")[:4] \
        or str((patient or {}).get("birthDate", ""))[:4]
    seen = str(getattr(ds, "StudyDate", "") or "")[:4]
    if born.isdigit() and seen.isdigit():
        return float(int(seen) - int(born))
    return float("nan")


def _sex(ds, patient: dict | None) -> float:
    sex = str(getattr(ds, "PatientSex", "") or "").upper()[:1] \
        or {"male": "M", "female": "F"}.get(str((patient or {}).get("gender")), "")
    return {"F": 1.0, "M": 0.0}.get(sex, 0.5)


def pixel_features(pixels: np.ndarray, full_scale: float) -> list[float]:
    """The six pixel features of a series' slices, as fractions of the full scale."""
    x = pixels.astype(np.float64) / full_scale
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    contrast = float(np.mean(np.abs(np.diff(x, axis=-1))))  # neighbours' mean difference
    return [float(x.mean()), float(x.std()), float(p10), float(p50), float(p90), contrast]


def series_table(extract_dir: Path, modality: str = "MR", body_part: str = "",
                 condition: str = GLIOMA) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(patients, raw features (n, 8), labels (n,)) of an extract: one row per patient, of
    their first series (by UID) of `modality` and `body_part` ("" for any)."""
    import pydicom

    extract_dir = Path(extract_dir)
    patients, cases = _fhir(extract_dir, condition)
    slices: dict[str, list] = defaultdict(list)
    for path in sorted((extract_dir / "dicom").rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path)
            if modality and str(getattr(ds, "Modality", "")) != modality:
                continue
            if body_part and str(getattr(ds, "BodyPartExamined", "")) != body_part:
                continue
            pixels = ds.pixel_array
        except Exception:  # not an image this model reads
            continue
        slices[str(ds.SeriesInstanceUID)].append((ds, pixels))
    first: dict[str, str] = {}
    for uid in sorted(slices):
        first.setdefault(str(getattr(slices[uid][0][0], "PatientID", "")), uid)
    ids, rows, labels = [], [], []
    for patient_id in sorted(first):
        uid = first[patient_id]
        ds = slices[uid][0][0]
        shapes = {p.shape for _, p in slices[uid]}
        stack = np.stack([p for _, p in slices[uid]]) if len(shapes) == 1 \
            else slices[uid][0][1]
        full_scale = float((1 << int(getattr(ds, "BitsStored", 16))) - 1)
        patient = patients.get(patient_id)
        fhir_id = str(patient.get("id")) if patient else patient_id
        ids.append(patient_id)
        rows.append(pixel_features(stack, full_scale) + [_age(ds, patient), _sex(ds, patient)])
        labels.append(1.0 if fhir_id in cases or patient_id in cases else 0.0)
    return ids, np.array(rows, dtype=np.float64).reshape(-1, len(FEATURES)), \
        np.array(labels, dtype=np.float64)


def _numbers(text: str) -> np.ndarray:
    values = np.array([float(v) for v in str(text).split(",")], dtype=np.float64)
    if values.shape != (len(FEATURES),):
        raise ValueError(f"a standardisation needs {len(FEATURES)} numbers")
    return values


def standardise(X: np.ndarray, config: Mapping | None = None) -> np.ndarray:
    """X centred and scaled by the run config's fixed statistics (the same at every
    site); a missing value (an unknown age) becomes the centre, 0."""
    config = {**DEFAULTS, **(config or {})}
    Z = (X - _numbers(config["feature-center"])) / _numbers(config["feature-scale"])
    return np.nan_to_num(Z, nan=0.0)


def in_test(key: str, share: float = TEST_SHARE) -> bool:
    """Whether a patient is in the test split (`share`, by the hash of their id)."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return digest / 2.0**64 < share


def load_extract(extract_dir: Path, config: Mapping | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test) of an extract, X standardised (`standardise`)."""
    config = {**DEFAULTS, **(config or {})}
    ids, X, y = series_table(Path(extract_dir), str(config["modality"]),
                             str(config["body-part"]), str(config["condition"]))
    X = standardise(X, config)
    share = float(config.get("test-share", TEST_SHARE))
    test = np.array([in_test(i, share) for i in ids], dtype=bool)
    return X[~test], y[~test], X[test], y[test]


# The model: arrays [coef (8,), intercept (1,)].
def initial_arrays() -> list[np.ndarray]:
    return [np.zeros(len(FEATURES)), np.zeros(1)]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def predict_proba(arrays: list[np.ndarray], X: np.ndarray) -> np.ndarray:
    """P(no glioma), P(glioma) for each row of X: shape (n, 2)."""
    coef, intercept = (np.asarray(a, dtype=np.float64) for a in arrays)
    p = _sigmoid(X @ coef.reshape(-1) + intercept.reshape(-1)[0])
    return np.column_stack([1.0 - p, p])


def loss(arrays: list[np.ndarray], X: np.ndarray, y: np.ndarray, l2: float = 0.0) -> float:
    p = np.clip(predict_proba(arrays, X)[:, 1], 1e-12, 1 - 1e-12)
    penalty = 0.5 * l2 * float(np.sum(np.asarray(arrays[0]) ** 2))
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) + penalty


def evaluate(arrays: list[np.ndarray], X: np.ndarray, y: np.ndarray
             ) -> tuple[float, float]:
    """(log loss, accuracy) of the model on X, y."""
    accuracy = float(np.mean((predict_proba(arrays, X)[:, 1] >= 0.5) == (y == 1)))
    return loss(arrays, X, y), accuracy


# Newton's method (iteratively reweighted least squares, as R's glm and DataSHIELD's ds.glm
# fit a logistic regression): each node sends the gradient and Hessian of its mean loss at
# the global model; their average weighted by the nodes' counts (FedAvg's aggregate) is the
# pooled data's, so the server's Newton step is the step of the model trained on the pooled
# data. The model's parameters travel as one vector w = [coef..., intercept].
N_PARAMS = len(FEATURES) + 1
MAX_STEP = 10.0  # a Newton step's largest norm: guards the first steps and noisy Hessians


def gradient_hessian(w: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The gradient and Hessian of the mean L2-penalised log loss at w (shapes (p,), (p, p));
    the intercept is not penalised."""
    Z = np.column_stack([X, np.ones(len(X))])
    p = _sigmoid(Z @ np.asarray(w, dtype=np.float64))
    penalty = np.full(N_PARAMS, l2)
    penalty[-1] = 0.0
    gradient = Z.T @ (p - y) / len(y) + penalty * w
    hessian = (Z * (p * (1 - p))[:, None]).T @ Z / len(y) + np.diag(penalty)
    return gradient, hessian


def newton_step(w: np.ndarray, gradient: np.ndarray, hessian: np.ndarray,
                floor: float = 1e-3) -> np.ndarray:
    """w after one Newton step; the Hessian made symmetric with its eigenvalues at least
    `floor` (a noised one, under differential privacy, may not be positive definite), the
    step at most MAX_STEP long."""
    values, vectors = np.linalg.eigh((hessian + hessian.T) / 2)
    step = vectors @ ((vectors.T @ gradient) / np.maximum(values, floor))
    norm = float(np.linalg.norm(step))
    if norm > MAX_STEP:
        step *= MAX_STEP / norm
    return np.asarray(w, dtype=np.float64) - step


def to_arrays(w: np.ndarray) -> list[np.ndarray]:
    """The model's arrays [coef (8,), intercept (1,)] of a parameter vector."""
    w = np.asarray(w, dtype=np.float64)
    return [w[:-1].copy(), w[-1:].copy()]


def fit(X: np.ndarray, y: np.ndarray, config: Mapping | None = None,
        iterations: int = 25) -> list[np.ndarray]:
    """The model trained from scratch on X, y in one place (for comparisons and shadow
    models): the same penalised loss, by the same Newton steps, to convergence."""
    config = {**DEFAULTS, **(config or {})}
    w = np.zeros(N_PARAMS)
    for _ in range(iterations):
        gradient, hessian = gradient_hessian(w, X, y, float(config["l2"]))
        w = newton_step(w, gradient, hessian)
        if np.linalg.norm(gradient) < 1e-10:
            break
    return to_arrays(w)
