"""Per-series image features and the covariates of a series, read from a staged extract
(/extract/dicom/<Study>/<Series>/<SOP>.dcm, /extract/fhir/<ResourceType>.ndjson).
Self-contained: numpy and pydicom only (it runs in the sandbox, which has no `spe`).

Features (`FEATURES`, in order) of all instances of a series, in stored values turned
into modality values (RescaleSlope, RescaleIntercept): the foreground is what lies above
Otsu's threshold (256 bins over the series' range); over it, the intensity statistics
(mean, standard deviation, 10th, 50th and 90th percentiles, skewness, excess kurtosis,
the entropy in bits of a 64-bin histogram, and the foreground's share of the voxels) and
four grey-level co-occurrence features (contrast, homogeneity, energy = sqrt(ASM),
correlation) of the foreground quantised to 32 levels, at distance 1 in the 4 in-plane
directions (0, 45, 90, 135 degrees), symmetric, pairs of foreground pixels only, one
matrix per direction summed over the slices, the features averaged over the directions.

Covariates (`series_covariates`): age at the study, in years (DICOM PatientAge when the
extract kept it, else the FHIR Patient's birthDate at the study's date, else the middle
of the age band an extract generalised by its risk layer writes instead,
`urn:spe:fhir:extension:age-band-at-first-study`); sex (DICOM PatientSex, else
Patient.gender; "unknown" is no sex); diagnosis, 1 when any coding of any Condition of
the patient has a code starting with one of the given ICD-10 prefixes, 0 when the patient
has none, unknown (None) when no FHIR Patient is linked. The DICOM PatientID is the value
of the Patient's MRN identifier (pseudonymised alike); Conditions name their patient by
`subject.reference` "Patient/<id>". Dates of a patient are shifted alike in DICOM and FHIR
inside one extract, so an age from them is the true one. A de-identified extract keeps
PatientAge and PatientSex only under the Retain Patient Characteristics option: the FHIR
side is the usual source.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

FEATURES = (
    "mean", "std", "p10", "p50", "p90", "skewness", "kurtosis", "entropy",
    "foreground_fraction",
    "glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation",
)
LEVELS = 32
OTSU_BINS = 256
ENTROPY_BINS = 64
#: (row, column) offsets at distance 1: 0, 45, 90 and 135 degrees.
OFFSETS = ((0, 1), (-1, 1), (-1, 0), (-1, -1))
AGE_BAND_URL = "urn:spe:fhir:extension:age-band-at-first-study"
HEADER_TAGS = ["PatientID", "PatientAge", "PatientSex", "StudyDate", "StudyInstanceUID",
               "SeriesInstanceUID", "Modality", "BodyPartExamined", "InstanceNumber",
               "SamplesPerPixel"]
SEX = {"M": "male", "F": "female", "O": "other",
       "male": "male", "female": "female", "other": "other"}


@dataclass
class Series:
    """One series of the extract: its instances' files and what its headers say."""
    uid: str
    study: str = ""
    patient: str = ""
    modality: str = ""
    body_part: str = ""
    age: str = ""
    sex: str = ""
    study_date: str = ""
    files: list[tuple[int, str, Path]] = field(default_factory=list)

    def paths(self) -> list[Path]:
        return [path for _number, _name, path in sorted(self.files)]


def find_series(dicom_dir: Path, modality: str | None = None,
                body_part: str | None = None) -> list[Series]:
    """The series under `dicom_dir` (any layout: grouped by SeriesInstanceUID), sorted by
    UID; only those of `modality` and `body_part` when given (case-insensitive). Files
    pydicom cannot read are skipped."""
    import pydicom

    found: dict[str, Series] = {}
    dicom_dir = Path(dicom_dir)
    if not dicom_dir.is_dir():
        return []
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        except Exception:  # not DICOM, truncated: not a series of ours
            continue
        uid = str(ds.get("SeriesInstanceUID") or "")
        if not uid:
            continue
        series = found.get(uid)
        if series is None:
            series = found[uid] = Series(
                uid=uid, study=str(ds.get("StudyInstanceUID") or ""),
                patient=str(ds.get("PatientID") or ""),
                modality=str(ds.get("Modality") or ""),
                body_part=str(ds.get("BodyPartExamined") or ""),
                age=str(ds.get("PatientAge") or ""), sex=str(ds.get("PatientSex") or ""),
                study_date=str(ds.get("StudyDate") or ""))
        try:
            number = int(ds.get("InstanceNumber") or 0)
        except (TypeError, ValueError):
            number = 0
        series.files.append((number, path.name, path))
    wanted = []
    for uid in sorted(found):
        series = found[uid]
        if modality and series.modality.upper() != modality.upper():
            continue
        if body_part and series.body_part.upper() != body_part.upper():
            continue
        wanted.append(series)
    return wanted


# --- pixels and features ------------------------------------------------------------------

def read_slices(paths: Iterable[Path]) -> list[np.ndarray]:
    """Every frame of the instances, as 2-D float64 modality values (slope, intercept).
    Colour instances and pixel data pydicom cannot decode are left out."""
    import pydicom

    slices: list[np.ndarray] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path)
            if int(ds.get("SamplesPerPixel") or 1) != 1 or "PixelData" not in ds:
                continue
            pixels = np.asarray(ds.pixel_array, dtype=np.float64)
        except Exception:  # a transfer syntax without a decoder, a broken file
            continue
        slope = float(ds.get("RescaleSlope") or 1.0)
        intercept = float(ds.get("RescaleIntercept") or 0.0)
        pixels = pixels * slope + intercept
        if pixels.ndim == 2:
            slices.append(pixels)
        elif pixels.ndim == 3:  # multi-frame
            slices.extend(frame for frame in pixels)
    return slices


def otsu_threshold(values: np.ndarray, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold: the bin edge that maximises the between-class variance."""
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)
    total = weight[-1]
    first = weight[:-1]
    second = total - first
    cumulative = np.cumsum(counts * centres)
    mean_first = cumulative[:-1] / np.where(first > 0, first, 1)
    mean_second = (cumulative[-1] - cumulative[:-1]) / np.where(second > 0, second, 1)
    between = first * second * (mean_first - mean_second) ** 2
    return float(edges[1:-1][int(np.argmax(between))])


def intensity_features(foreground: np.ndarray, total: int) -> list[float]:
    values = np.asarray(foreground, dtype=np.float64)
    mean = float(values.mean())
    centred = values - mean
    m2 = float(np.mean(centred ** 2))
    std = float(np.sqrt(m2))
    if m2 > 0:
        skewness = float(np.mean(centred ** 3)) / m2 ** 1.5
        kurtosis = float(np.mean(centred ** 4)) / m2 ** 2 - 3.0
    else:
        skewness = kurtosis = 0.0
    p10, p50, p90 = (float(v) for v in np.percentile(values, [10, 50, 90]))
    low, high = float(values.min()), float(values.max())
    if high > low:
        counts, _ = np.histogram(values, bins=ENTROPY_BINS, range=(low, high))
        p = counts[counts > 0] / counts.sum()
        entropy = float(-(p * np.log2(p)).sum())
    else:
        entropy = 0.0
    return [mean, std, p10, p50, p90, skewness, kurtosis, entropy, values.size / total]


def quantise(image: np.ndarray, low: float, high: float, levels: int = LEVELS) -> np.ndarray:
    if high <= low:
        return np.zeros(image.shape, dtype=np.int64)
    q = np.floor((image - low) / (high - low) * levels).astype(np.int64)
    return np.clip(q, 0, levels - 1)


def cooccurrence(slices: list[np.ndarray], masks: list[np.ndarray], levels: int = LEVELS
                 ) -> np.ndarray:
    """Symmetric co-occurrence counts (directions x levels x levels) of foreground pairs."""
    counts = np.zeros((len(OFFSETS), levels * levels), dtype=np.float64)
    for image, mask in zip(slices, masks, strict=True):
        rows, cols = image.shape
        for k, (dr, dc) in enumerate(OFFSETS):
            r0, r1 = max(0, -dr), rows - max(0, dr)
            c0, c1 = max(0, -dc), cols - max(0, dc)
            if r1 <= r0 or c1 <= c0:
                continue
            a = image[r0:r1, c0:c1]
            b = image[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
            both = mask[r0:r1, c0:c1] & mask[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
            i, j = a[both], b[both]
            counts[k] += np.bincount(i * levels + j, minlength=levels * levels)
            counts[k] += np.bincount(j * levels + i, minlength=levels * levels)
    return counts.reshape(len(OFFSETS), levels, levels)


def texture_features(matrices: np.ndarray) -> list[float]:
    """Contrast, homogeneity, energy and correlation, averaged over the directions that
    have pairs (NaN when none has)."""
    levels = matrices.shape[-1]
    i, j = np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij")
    per_direction = []
    for matrix in matrices:
        total = matrix.sum()
        if total <= 0:
            continue
        p = matrix / total
        contrast = float((p * (i - j) ** 2).sum())
        homogeneity = float((p / (1.0 + (i - j) ** 2)).sum())
        energy = float(np.sqrt((p ** 2).sum()))
        mu_i, mu_j = float((p * i).sum()), float((p * j).sum())
        sd_i = float(np.sqrt((p * (i - mu_i) ** 2).sum()))
        sd_j = float(np.sqrt((p * (j - mu_j) ** 2).sum()))
        if sd_i > 0 and sd_j > 0:
            correlation = float((p * (i - mu_i) * (j - mu_j)).sum()) / (sd_i * sd_j)
        else:
            correlation = 1.0  # one grey level: perfectly predictable (as scikit-image)
        per_direction.append([contrast, homogeneity, energy, correlation])
    if not per_direction:
        return [float("nan")] * 4
    return [float(v) for v in np.mean(per_direction, axis=0)]


def image_features(slices: list[np.ndarray]) -> np.ndarray | None:
    """`FEATURES` of the slices of one series, or None when there is nothing to measure
    (no pixels, no foreground of at least two pixels)."""
    if not slices:
        return None
    values = np.concatenate([s.ravel() for s in slices])
    if values.size == 0 or not np.isfinite(values).all():
        return None
    threshold = otsu_threshold(values)
    masks = [s > threshold for s in slices]
    foreground = values[values > threshold]
    if foreground.size < 2:
        return None
    low, high = float(foreground.min()), float(foreground.max())
    quantised = [quantise(s, low, high) for s in slices]
    features = (intensity_features(foreground, values.size)
                + texture_features(cooccurrence(quantised, masks)))
    result = np.array(features, dtype=np.float64)
    return result if np.isfinite(result).all() else None


def series_features(series: Series | Iterable[Path]) -> np.ndarray | None:
    paths = series.paths() if isinstance(series, Series) else list(series)
    return image_features(read_slices(paths))


# --- covariates ---------------------------------------------------------------------------

_FHIR_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T\S+)?)?)?")
_DICOM_DATE = re.compile(r"(\d{4})(\d{2})?(\d{2})?")
_AGE_UNITS = {"Y": 1, "M": 12, "W": 52, "D": 365}


def _first_day(match: re.Match[str] | None) -> date | None:
    if match is None:
        return None
    year, month, day = match.groups()
    try:
        return date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None


def fhir_date(value: object) -> date | None:
    """The first day a FHIR date or dateTime can mean; None when absent or unreadable."""
    return _first_day(_FHIR_DATE.fullmatch(value)) if isinstance(value, str) else None


def dicom_date(value: object) -> date | None:
    text = str(value or "").strip().replace(".", "")
    return _first_day(_DICOM_DATE.fullmatch(text)) if text else None


def dicom_age(value: object) -> float | None:
    """Years of a DICOM AS ("067Y", "018M"), whole as the staging reads them."""
    match = re.fullmatch(r"(\d{3})([YMWD])", str(value or "").strip())
    return float(int(match.group(1)) // _AGE_UNITS[match.group(2)]) if match else None


def age_between(birth: date | None, when: date | None) -> float | None:
    if birth is None or when is None or when < birth:
        return None
    return float(when.year - birth.year
                 - ((when.month, when.day) < (birth.month, birth.day)))


def band_middle(band: object) -> float | None:
    """The middle of an age band ("40-59" -> 49.5); a single age as it is."""
    text = str(band or "").strip()
    if match := re.fullmatch(r"(\d{1,3})-(\d{1,3})", text):
        low, high = int(match.group(1)), int(match.group(2))
        return (low + high) / 2.0 if high >= low else None
    return float(text) if re.fullmatch(r"\d{1,3}", text) else None


def _ndjson(path: Path) -> Iterator[dict]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                resource = json.loads(line)
            except ValueError:
                continue
            if isinstance(resource, dict):
                yield resource


def _subject(resource: dict) -> str | None:
    ref = str((resource.get("subject") or {}).get("reference") or "")
    if not ref.startswith("Patient/"):
        return None
    return ref.removeprefix("Patient/") or None


@dataclass
class Clinical:
    """What the extract's FHIR says of its patients."""
    patients: dict[str, dict] = field(default_factory=dict)  # by Patient.id
    by_identifier: dict[str, str] = field(default_factory=dict)  # identifier value -> id
    codes: dict[str, set[str]] = field(default_factory=dict)  # Patient.id -> codes
    study_dates: dict[str, date] = field(default_factory=dict)  # StudyInstanceUID -> started

    def patient_id(self, dicom_patient_id: str) -> str | None:
        """The Patient whose identifier's value is the DICOM PatientID (else whose id
        is, for an extract that keeps them equal)."""
        if dicom_patient_id in self.by_identifier:
            return self.by_identifier[dicom_patient_id]
        return dicom_patient_id if dicom_patient_id in self.patients else None


def read_clinical(fhir_dir: Path | None) -> Clinical:
    """The Patients, their Conditions' codes and the ImagingStudies' dates under
    `fhir_dir` (absent files or folder: nothing)."""
    clinical = Clinical()
    if fhir_dir is None or not Path(fhir_dir).is_dir():
        return clinical
    fhir_dir = Path(fhir_dir)
    for patient in _ndjson(fhir_dir / "Patient.ndjson"):
        pid = patient.get("id")
        if not isinstance(pid, str) or not pid:
            continue
        clinical.patients[pid] = patient
        for identifier in patient.get("identifier") or []:
            if isinstance(identifier, dict) and identifier.get("value"):
                clinical.by_identifier.setdefault(str(identifier["value"]), pid)
    for condition in _ndjson(fhir_dir / "Condition.ndjson"):
        pid = _subject(condition)
        if not pid:
            continue
        codes = clinical.codes.setdefault(pid, set())
        for coding in (condition.get("code") or {}).get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                codes.add(str(coding["code"]))
    for study in _ndjson(fhir_dir / "ImagingStudy.ndjson"):
        started = fhir_date(study.get("started"))
        if started is None:
            continue
        for identifier in study.get("identifier") or []:
            value = str((identifier or {}).get("value") or "")
            if value.startswith("urn:oid:"):
                clinical.study_dates.setdefault(value.removeprefix("urn:oid:"), started)
    return clinical


def has_diagnosis(codes: Iterable[str], prefixes: Iterable[str]) -> int:
    prefixes = tuple(str(p).upper() for p in prefixes)
    return int(any(str(code).upper().startswith(prefixes) for code in codes)) if prefixes \
        else 0


def series_covariates(series: Series, clinical: Clinical,
                      diagnosis_codes: Iterable[str] = ()) -> dict[str, object]:
    """{"age": years or None, "sex": "female"/"male"/"other" or None, "diagnosis": 0/1
    or None} of the series' patient at its study."""
    pid = clinical.patient_id(series.patient) if series.patient else None
    patient = clinical.patients.get(pid, {}) if pid else {}
    age = dicom_age(series.age)
    if age is None and patient:
        when = dicom_date(series.study_date) or clinical.study_dates.get(series.study)
        age = age_between(fhir_date(patient.get("birthDate")), when)
        if age is None:
            for extension in patient.get("extension") or []:
                if isinstance(extension, dict) and extension.get("url") == AGE_BAND_URL:
                    age = band_middle(extension.get("valueString"))
                    break
    sex = SEX.get(series.sex.strip().upper()) or SEX.get(str(patient.get("gender") or ""))
    diagnosis = (has_diagnosis(clinical.codes.get(pid, ()), diagnosis_codes)
                 if pid else None)
    return {"age": age, "sex": sex, "diagnosis": diagnosis}
