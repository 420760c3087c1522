"""The synthetic pixels carry scanner and site effects, and biology that survives them.

A small demo federation (its seed, 3 sites, 100 patients each) is planned and its images
built in memory with the functions `spe synth` uses (make_site, make_staff, plan_patient,
instance_dataset); each series is summarised by simple intensity features computed here
with numpy. A classifier on them must tell the sites apart, a linear model must find age
in brain MR, and a logistic regression the glioma patients (spe/synth/pixels.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spe.synth.dicom import ANNOTATION_ROWS, instance_dataset
from spe.synth.exams import MODALITIES
from spe.synth.history import plan_patient
from spe.synth.pixels import (
    BLUR_RANGE,
    GAIN_RANGE,
    NOISE_RANGE,
    OFFSET_RANGE,
    full_scale,
    scanner_effect,
)
from spe.synth.scanners import CATALOGUE, VENDORS
from spe.synth.sites import make_site
from spe.synth.staff import make_staff

SEED = 1  # the demo's
SITES = 3
PATIENTS = 100
FEATURES = ("mean", "sd", "p5", "p25", "p50", "p75", "p95", "p99", "contrast")


@dataclass
class Series:
    site: int
    patient: str
    modality: str
    exam: str
    model: str
    age: float
    male: bool
    glioma: bool
    features: np.ndarray
    low: float  # the least and greatest stored value, fractions of full scale
    high: float


def features(pixels: np.ndarray) -> np.ndarray:
    """Mean, SD, percentiles and the mean absolute difference of neighbouring pixels."""
    contrast = (np.abs(np.diff(pixels, axis=-1)).mean() + np.abs(np.diff(pixels, axis=-2)).mean())
    return np.array([pixels.mean(), pixels.std(), *np.percentile(pixels, [5, 25, 50, 75, 95, 99]),
                     contrast / 2])


def build(seed: int, sites: int, patients: int) -> list[Series]:
    out = []
    for index in range(sites):
        site = make_site(index, seed)
        staff = make_staff(site, seed)
        for n in range(patients):
            record = plan_patient(site, staff, seed, n)
            for study in record.studies:
                day = study.moment.date()
                glioma = any(c.definition.key == "glioma" and c.onset <= day
                             for c in record.conditions)
                for series in study.series:
                    pixels = np.stack([
                        instance_dataset(site, record, study, series, k).pixel_array
                        for k in range(1, series.instances + 1)]).astype(float)
                    if series.burned_in:  # the band holds a name, not the image
                        pixels = pixels[:, ANNOTATION_ROWS:]
                    pixels /= full_scale(MODALITIES[series.modality])
                    out.append(Series(
                        index, record.id, series.modality, study.exam.key, study.device.model,
                        (day - record.person.birth_date).days / 365.25,
                        record.person.sex == "M", glioma, features(pixels), pixels.min(),
                        pixels.max()))
    return out


@pytest.fixture(scope="module")
def federation() -> list[Series]:
    return build(SEED, SITES, PATIENTS)


def logistic() -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def site_auc(series: list[Series]) -> float:
    x = np.array([s.features for s in series])
    y = np.array([s.site for s in series])
    p = cross_val_predict(logistic(), x, y, method="predict_proba",
                          cv=StratifiedKFold(5, shuffle=True, random_state=0))
    return roc_auc_score(y, p, multi_class="ovr")


def test_same_seed_gives_the_same_pixels_and_another_seed_does_not():
    one, two, other = build(SEED, 1, 6), build(SEED, 1, 6), build(SEED + 1, 1, 6)
    assert len(one) > 5
    assert [s.features.tolist() for s in one] == [s.features.tolist() for s in two]
    assert [s.features.tolist() for s in one] != [s.features.tolist() for s in other]


def test_every_device_effect_is_within_its_documented_ranges():
    for vendor, kinds in CATALOGUE.items():
        for models in kinds.values():
            for model, _, _ in models:
                for site in (None, 0, 1, 2, 7):
                    effect = scanner_effect(VENDORS[vendor], model, site)
                    assert GAIN_RANGE[0] <= effect.gain <= GAIN_RANGE[1]
                    assert OFFSET_RANGE[0] <= effect.offset <= OFFSET_RANGE[1]
                    assert NOISE_RANGE[0] <= effect.noise <= NOISE_RANGE[1]
                    assert BLUR_RANGE[0] <= effect.blur <= BLUR_RANGE[1]
    # The same model at two sites: a calibration apart.
    assert scanner_effect("Philips", "Achieva", 1) != scanner_effect("Philips", "Achieva", 2)


def test_pixels_stay_within_the_stored_range(federation: list[Series]):
    for s in federation:
        assert 0.0 <= s.low <= s.high <= 1.0, s
    assert max(s.high for s in federation if s.modality == "CT") > 0.3  # no int16 wrap


def test_intensity_features_tell_the_sites_apart(federation: list[Series]):
    mr = [s for s in federation if s.modality == "MR"]
    assert {s.site for s in mr} == set(range(SITES))
    auc = site_auc(mr)
    print(f"MR series {len(mr)}: site AUC {auc:.3f}")
    assert auc > 0.9
    # The same within each modality every site has enough of.
    for modality in ("CT", "US", "DX"):
        chosen = [s for s in federation if s.modality == modality]
        auc = site_auc(chosen)
        print(f"{modality} series {len(chosen)}: site AUC {auc:.3f}")
        assert auc > 0.9, modality


def test_age_shows_in_brain_mr_across_scanners(federation: list[Series]):
    brain = [s for s in federation if s.exam == "MR_BRAIN"]
    age = np.array([s.age for s in brain])
    assert len(brain) > 40
    assert age.max() - age.min() > 30
    models = sorted({s.model for s in brain})
    design = np.column_stack([age, np.array([[s.model == m for m in models] for s in brain])])
    for name in ("mean", "p75"):
        y = np.array([s.features[FEATURES.index(name)] for s in brain])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        residual = y - design @ coef
        variance = residual @ residual / (len(y) - design.shape[1])
        t = coef[0] / np.sqrt(variance * np.linalg.inv(design.T @ design)[0, 0])
        print(f"brain MR {name} ~ age + scanner: {coef[0] * 10:+.4f} of full scale "
              f"per decade, t = {t:.1f}")
        assert coef[0] < 0, name
        assert t < -5, name


def test_glioma_is_found_in_brain_mr_from_features_age_and_sex(federation: list[Series]):
    brain = [s for s in federation if s.exam == "MR_BRAIN"]
    y = np.array([s.glioma for s in brain])
    patients = [s.patient for s in brain]
    assert len({p for p, g in zip(patients, y, strict=True) if g}) >= 5
    x = np.array([[*s.features, s.age, s.male] for s in brain])
    # Folds by patient: a patient's series are never both trained on and tested.
    p = cross_val_predict(logistic(), x, y, groups=patients, method="predict_proba",
                          cv=StratifiedGroupKFold(5, shuffle=True, random_state=0))[:, 1]
    auc = roc_auc_score(y, p)
    print(f"brain MR series {len(brain)} ({y.sum()} with glioma): AUC {auc:.3f}")
    assert auc > 0.75
