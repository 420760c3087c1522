"""What a synthetic image shows: the patient's anatomy, then the scanner that took it.

The pixels carry structure a federated analysis can learn and has to correct for, the two
things federated harmonisation (ComBat) and a federated-learning example need:

**Batch effects: scanner and site.** Each image passes through its device's effect
(`scanner_effect`), deterministic from (Manufacturer, Manufacturer's Model Name, site):

    stored = clip(blur_sigma(gain * signal + offset + noise), 0, full scale)

  - gain, multiplicative: 0.75-1.30. The vendor sets it (`VENDOR_EFFECTS`: Siemens 1.12,
    GE 0.85, Philips 1.00, Canon 0.92, Fujifilm 1.22, Agfa 0.80), the model moves it by
    x0.92-1.08 and the site's calibration by x0.92-1.08;
  - offset, additive: -5 % to +5 % of full scale (vendor -2 % to +3.5 %, model +-1.2 %,
    site +-2 %);
  - noise, Gaussian, its SD 1-6 % of full scale (vendor 2-5 %, model x0.75-1.30);
  - blur, a Gaussian reconstruction kernel of sigma 0-1.5 px (vendor 0.2-1.1 px, model
    -0.3 to +0.4 px), over the signal and the noise, as a soft kernel smooths both.

The model's and the site's parts come from a hash of their names (blake2b, no state), the
site's calibration from its index along a golden-ratio sequence, so sites that run the
same model (the demo's site-b and site-c both have a GE DISCOVERY MR750 and a Philips
Achieva) still differ, by a background level and a contrast no two of the first eight
sites share. Simple per-series intensity features (mean, SD, percentiles, a neighbour
contrast) tell the demo's three sites apart (tests/spe/test_synth_effects.py: a
cross-validated ROC AUC above 0.9).

**Biology that survives the scanner.** Head images (Body Part BRAIN or HEAD: MR brain,
CT head, the CT and PET of a brain PET-CT) draw the patient, in normalised coordinates:
a skull ring, brain tissue inside it, cerebrospinal fluid (CSF) between brain and skull
and in central ventricles, and lesions:

  - age at the study (18-100 years): the brain shrinks by 0.28 % of its radius a year
    after 18 (x0.80 at 90, the gap to the skull filling with CSF), darkens by 0.15 % a
    year, and the ventricles' radius grows from 0.08 to 0.26 of the head;
  - sex: male skull and brain 3 % larger;
  - diagnosis, from the patient's conditions whose onset is on or before the study:
    a glioma is a bright blob (Gaussian, sigma 0.10-0.16 of the head, +40 % of full scale
    on MR, +45 % on PET, +10 % on CT) in one hemisphere; multiple sclerosis 4 small bright
    spots around the ventricles (MR); a stroke a dark region (MR, CT, PET); Alzheimer's
    disease 12 years' more atrophy, Huntington's disease larger ventricles. Where they
    sit follows from the patient, so a patient's studies agree.

Age shows in the intensity features (in the demo's brain MR, a linear model of a series'
mean on age and scanner: -1.7 % of full scale a decade, t about -18) and a glioma in a
bright tail (with age and sex, a logistic regression finds the glioma patients' brain MR
series with a cross-validated AUC about 0.95). Chest radiographs (DX, CR) draw soft
tissue, lungs, heart and spine (`_chest`), with age, sex, COPD, heart disease and lung
cancer in them (3 sites of 300 patients: a series' mean on age, sex and site, t about -80).
Other body parts keep the former phantom:
an ellipse at 60 % of full scale on a 5 % background. MR sequences (T1, T2, FLAIR, DWI) are
not told apart: a series' contrast depends on its patient and scanner, not its sequence.

Full scale is 200 for 8-bit ultrasound, 4095 for CT (stored 0-4095 with intercept -1024:
-1024 to 3071 HU, what CT scanners write) and 2^BitsStored - 1 otherwise; values are
clipped to [0, full scale]. The noise comes from the caller's generator, seeded per series
and instance, so the same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np

from spe.synth.exams import ModalityDef
from spe.synth.records import PatientRecord, StudyRecord

HEAD_PARTS = frozenset({"BRAIN", "HEAD"})
GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class ScannerEffect:
    gain: float  # multiplicative
    offset: float  # fraction of full scale
    noise: float  # noise SD, fraction of full scale
    blur: float  # Gaussian sigma in pixels


# Vendor: (gain, offset, noise, blur), the part of the effect every model of it shares.
VENDOR_EFFECTS: dict[str, ScannerEffect] = {
    "SIEMENS": ScannerEffect(1.12, 0.020, 0.020, 0.3),
    "GE MEDICAL SYSTEMS": ScannerEffect(0.85, -0.015, 0.040, 0.9),
    "Philips": ScannerEffect(1.00, 0.035, 0.030, 0.6),
    "CANON_MEC": ScannerEffect(0.92, 0.010, 0.025, 1.1),
    "FUJIFILM Corporation": ScannerEffect(1.22, -0.020, 0.045, 0.2),
    "Agfa": ScannerEffect(0.80, 0.000, 0.050, 0.5),
}
GAIN_RANGE = (0.75, 1.30)
OFFSET_RANGE = (-0.05, 0.05)
NOISE_RANGE = (0.01, 0.06)
BLUR_RANGE = (0.0, 1.5)


def _unit(key: str) -> float:
    """A number in [0, 1) that depends on `key` alone."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def _between(key: str, low: float, high: float) -> float:
    return low + (high - low) * _unit(key)


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(bounds[1], max(bounds[0], value))


@lru_cache(maxsize=1024)
def scanner_effect(manufacturer: str, model: str, site_index: int | None = None) -> ScannerEffect:
    """The batch effect of one device (`site_index` None: the model's, before any site)."""
    name = manufacturer
    vendor = VENDOR_EFFECTS.get(name) or ScannerEffect(  # a vendor not in the table
        _between(f"{name}/gain", 0.85, 1.15), _between(f"{name}/offset", -0.02, 0.03),
        _between(f"{name}/noise", 0.02, 0.05), _between(f"{name}/blur", 0.2, 1.1))
    key = f"{manufacturer}/{model}"
    gain = vendor.gain * _between(f"{key}/gain", 0.92, 1.08)
    offset = vendor.offset + _between(f"{key}/offset", -0.012, 0.012)
    noise = vendor.noise * _between(f"{key}/noise", 0.75, 1.30)
    blur = vendor.blur + _between(f"{key}/blur", -0.3, 0.4)
    if site_index is not None:
        # A site's calibration: well spread for consecutive indices, so neighbours differ.
        gain *= 0.92 + 0.16 * ((0.25 + site_index * GOLDEN * GOLDEN) % 1.0)
        offset += -0.02 + 0.04 * ((0.5 + site_index * GOLDEN) % 1.0)
    return ScannerEffect(round(_clamp(gain, GAIN_RANGE), 4), round(_clamp(offset, OFFSET_RANGE), 4),
                         round(_clamp(noise, NOISE_RANGE), 4), round(_clamp(blur, BLUR_RANGE), 3))


def full_scale(modality: ModalityDef) -> int:
    if modality.bits_stored == 8:
        return 200
    if modality.signed:  # CT: 0-4095 stored, -1024 to 3071 HU with the intercept
        return 4095
    return (1 << modality.bits_stored) - 1


@dataclass(frozen=True)
class Subject:
    """What of the patient an image shows, at the time of the study."""

    age: float  # years
    sex: str
    conditions: frozenset[str]  # condition keys with onset on or before the study
    key: str  # the patient: where lesions sit


def subject(record: PatientRecord, study: StudyRecord) -> Subject:
    day: date = study.moment.date()
    age = (day - record.person.birth_date).days / 365.25
    conditions = frozenset(c.definition.key for c in record.conditions if c.onset <= day)
    return Subject(age, record.person.sex, conditions, record.id)


# Head intensities per modality, fractions of full scale: background, skull ring, brain,
# CSF; then the lesions' amplitudes: glioma, MS spot, stroke.
HEAD_LEVELS: dict[str, tuple[float, ...]] = {
    "MR": (0.03, 0.30, 0.55, 0.12, 0.40, 0.25, -0.25),
    "CT": (0.00, 0.60, 0.30, 0.22, 0.10, 0.02, -0.08),
    "PT": (0.02, 0.05, 0.40, 0.05, 0.45, 0.00, -0.25),
}


def image(modality_name: str, modality: ModalityDef, body_part: str, who: Subject,
          effect: ScannerEffect, rng: np.random.Generator) -> np.ndarray:
    """The image, as floats within [0, full scale]."""
    rows, columns = modality.rows, modality.columns
    top = full_scale(modality)
    y, x = np.ogrid[-1:1:rows * 1j, -1:1:columns * 1j]
    if body_part in HEAD_PARTS and modality_name in HEAD_LEVELS:
        signal = _head(x, y, who, HEAD_LEVELS[modality_name])
    elif body_part == "CHEST" and modality_name in CHEST_MODALITIES:
        signal = _chest(x, y, who)
    else:  # the former phantom: a bright ellipse on a dark background
        signal = np.where((x / 0.8) ** 2 + (y / 0.65) ** 2 <= 1.0, 0.6, 0.05)
    noisy = effect.gain * signal + effect.offset + rng.normal(0, effect.noise, (rows, columns))
    return np.clip(_blur(noisy, effect.blur) * top, 0, top)


def _head(x: np.ndarray, y: np.ndarray, who: Subject, levels: tuple[float, ...]) -> np.ndarray:
    background, skull, brain, csf, glioma, ms, stroke = levels
    conditions = who.conditions
    age = min(100.0, max(18.0, who.age)) - 18.0
    atrophy_age = age + (12.0 if "alzheimer" in conditions else 0.0)
    size = 1.03 if who.sex == "M" else 1.0
    shrink = 1.0 - 0.0028 * atrophy_age
    head = (x / (0.86 * size)) ** 2 + (y / (0.74 * size)) ** 2
    inner = (x / (0.78 * size)) ** 2 + (y / (0.66 * size)) ** 2
    tissue = (x / (0.76 * size * shrink)) ** 2 + (y / (0.64 * size * shrink)) ** 2
    ventricle = 0.08 + 0.0025 * atrophy_age + (0.06 if "huntington" in conditions else 0.0)
    ventricles = (x / ventricle) ** 2 + (y / (1.6 * ventricle)) ** 2
    out = np.full(np.broadcast(x, y).shape, background)
    out[head <= 1.0] = skull
    out[inner <= 1.0] = csf
    out[tissue <= 1.0] = brain * (1.0 - 0.0015 * age)
    out[ventricles <= 1.0] = csf
    key = who.key
    if "glioma" in conditions:
        side = 1.0 if _unit(f"{key}/glioma/side") < 0.5 else -1.0
        out += glioma * _blob(x, y, side * _between(f"{key}/glioma/x", 0.2, 0.42),
                              _between(f"{key}/glioma/y", -0.3, 0.25),
                              _between(f"{key}/glioma/size", 0.10, 0.16))
    if "multiple_sclerosis" in conditions and ms:
        for n in range(4):
            angle = _between(f"{key}/ms/{n}/angle", 0, 2 * math.pi)
            radius = ventricle + _between(f"{key}/ms/{n}/radius", 0.05, 0.2)
            out += ms * _blob(x, y, radius * math.cos(angle), 1.6 * radius * math.sin(angle),
                              0.045)
    if "stroke" in conditions:
        side = 1.0 if _unit(f"{key}/stroke/side") < 0.5 else -1.0
        out += stroke * _blob(x, y, side * _between(f"{key}/stroke/x", 0.25, 0.5),
                              _between(f"{key}/stroke/y", -0.35, 0.35), 0.18)
    return out


#: Projection radiographs of the chest, whose pixels rise with attenuation (MONOCHROME2).
CHEST_MODALITIES = frozenset({"DX", "CR"})


def _chest(x: np.ndarray, y: np.ndarray, who: Subject) -> np.ndarray:
    """A frontal chest radiograph: soft tissue, two dark lung fields, the heart's shadow
    between them and the spine. With age the soft tissue thins (-0.12 % of full scale a
    year after 18), the spine loses density (-0.25 %), the lungs darken a little (-0.08 %)
    and the heart widens (+1.2 % a year); COPD hyperinflates and darkens the lungs;
    hypertension and a myocardial infarction enlarge the heart; lung cancer is a bright
    nodule in one lung.

    The lungs stay darker than half the soft tissue's level at any age and on any scanner,
    so an intensity threshold (Otsu's, as in the ComBat step's features) puts them in the
    background for every patient: were young lungs near the tissue's level, the threshold
    would take them in for some patients and scanners and not others, and a feature's
    slope on age would differ from scanner to scanner (an interaction no location-scale
    harmonisation models, tests/federated/test_combat_federated.py)."""
    conditions = who.conditions
    age = min(100.0, max(18.0, who.age)) - 18.0
    size = 1.04 if who.sex == "M" else 1.0
    copd = "copd" in conditions
    lung_w = 0.30 * size * (1.10 if copd else 1.0)
    lung_h = 0.62 * size * (1.10 if copd else 1.0)
    lung_level = 0.14 - 0.0008 * age - (0.03 if copd else 0.0)
    heart_w = 0.16 * size * (1.0 + 0.012 * age
                             + (0.12 if "hypertension" in conditions else 0.0)
                             + (0.15 if "myocardial_infarction" in conditions else 0.0))
    body = (x / (0.92 * size)) ** 2 + (y / (0.95 * size)) ** 2
    out = np.full(np.broadcast(x, y).shape, 0.03)
    out[body <= 1.0] = 0.45 - 0.0012 * age
    for side in (-1.0, 1.0):
        lung = ((x - side * 0.40 * size) / lung_w) ** 2 + ((y + 0.02) / lung_h) ** 2
        out[lung <= 1.0] = lung_level
    heart = ((x - 0.06) / heart_w) ** 2 + ((y - 0.30) / (0.6 * heart_w + 0.08)) ** 2
    out[heart <= 1.0] = 0.62
    spine = np.broadcast_to(np.abs(x) < 0.06, out.shape) & (body <= 1.0)
    out[spine] = 0.70 - 0.0025 * age
    if "lung_cancer" in conditions:
        side = 1.0 if _unit(f"{who.key}/lung_cancer/side") < 0.5 else -1.0
        out += 0.30 * _blob(x, y, side * _between(f"{who.key}/lung_cancer/x", 0.3, 0.5),
                            _between(f"{who.key}/lung_cancer/y", -0.4, 0.2), 0.07)
    return out


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sigma: float) -> np.ndarray:
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian smoothing (edges mirrored), as two small matrix products."""
    if sigma < 0.05:
        return image
    rows, columns = image.shape
    return _kernel(rows, sigma) @ image @ _kernel(columns, sigma).T


@lru_cache(maxsize=256)
def _kernel(n: int, sigma: float) -> np.ndarray:
    """The n x n matrix that smooths a vector of n samples with a Gaussian of `sigma`."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-offsets ** 2 / (2 * sigma * sigma))
    weights /= weights.sum()
    matrix = np.zeros((n, n))
    for i in range(n):
        for d, w in zip(offsets, weights, strict=True):
            j = i + int(d)
            j = -j - 1 if j < 0 else (2 * n - j - 1 if j >= n else j)  # mirror at the edge
            matrix[i, min(n - 1, max(0, j))] += w
    matrix.setflags(write=False)
    return matrix
