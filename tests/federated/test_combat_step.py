"""The ComBat step as the sandbox runs it (`python /code/step.py` with site.py,
features.py and steplib.py beside it) over extracts of `spe synth` sites: its three rounds
end in the harmonised features neuroCombat gives on the pooled features, its features
are deterministic, and its covariates come from what de-identification leaves."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from neuroCombat import neuroCombat

from spe.federated import combat
from spe.federated.apps.combat import features
from spe.federated.apps.combat.site import width
from spe.synth import generate

APPS = Path(__file__).resolve().parents[2] / "spe" / "federated" / "apps"
NAMES = [n for n in features.FEATURES if n != "foreground_fraction"]  # ~constant in synth
CONFIG = {"batches": ["node-a", "node-b"],
          "covariates": {"age": "continuous", "sex": "categorical"},
          "diagnosis_codes": ["C71", "G35"], "modality": "MR", "features": NAMES}


def deidentify_like(site: Path) -> None:
    """What a staged extract with generalised age keeps: no PatientAge, PatientSex nor
    birth date in DICOM, an age band instead of the FHIR birth date."""
    for path in (site / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword in ("PatientAge", "PatientSex", "PatientBirthDate"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path)
    patients = (site / "fhir" / "Patient.ndjson").read_text().splitlines()
    out = []
    for line in patients:
        patient = json.loads(line)
        patient.pop("birthDate")
        patient["extension"] = [{"url": features.AGE_BAND_URL, "valueString": "60-79"}]
        out.append(json.dumps(patient))
    (site / "fhir" / "Patient.ndjson").write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def extracts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    generate(root, institutions=2, patients=25, seed=5)
    deidentify_like(root / "site-b")
    return {"node-a": root / "site-a", "node-b": root / "site-b"}


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("code")
    for name in ("step.py", "site.py", "features.py"):
        shutil.copy(APPS / "combat" / name, folder / name)
    shutil.copy(APPS / "steplib.py", folder / "steplib.py")
    return folder


def run_step(code: Path, extract: Path, output: Path, kind: str, node: str,
             arrays: dict[str, np.ndarray] | None = None, config=CONFIG):
    folder = code / "_round"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "round.json").write_text(json.dumps(
        {"run": "r1", "round": 0, "kind": kind, "node": node, "config": config}))
    if arrays:
        np.savez(folder / "arrays.npz", **arrays)
    shutil.rmtree(output, ignore_errors=True)
    env = {"SPE_STEP_CODE": str(code), "SPE_STEP_EXTRACT": str(extract),
           "SPE_STEP_OUTPUT": str(output), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(code / "step.py")], env=env, cwd="/",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    update = json.loads((output / "update.json").read_text())
    with np.load(output / "arrays.npz", allow_pickle=False) as npz:
        return update, {k: np.array(npz[k]) for k in npz.files}


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_three_rounds_end_in_neurocombats_harmonisation(code, extracts, tmp_path):
    nodes = CONFIG["batches"]
    out = {node: tmp_path / node for node in nodes}
    p, f = width(len(nodes), CONFIG["covariates"]), len(NAMES)
    moments = [run_step(code, extracts[node], out[node], "moments", node) for node in nodes]
    for update, arrays in moments:
        assert set(arrays) == set(combat.moments_contract(p, f).arrays)
        assert arrays["xtx"].shape == (p, p)
        assert arrays["xty"].shape == (p, f)
        assert update["n"] >= 2
    B_hat = combat.pool_moments((a["xtx"], a["xty"], u["n"]) for u, a in moments)
    ns = combat.batch_sizes([a["xtx"] for _, a in moments], len(nodes))
    variance = [run_step(code, extracts[node], out[node], "variance", node,
                         {"B_hat": B_hat}) for node in nodes]
    var_pooled = combat.pool_variance((a["ssr"], n) for (_, a), n in
                                      zip(variance, ns, strict=True))
    inputs = {"B_hat": B_hat, "grand_mean": combat.grand_mean(B_hat, ns),
              "var_pooled": var_pooled}
    adjusted = [run_step(code, extracts[node], out[node], "adjust", node, inputs)
                for node in nodes]
    for node in nodes:
        assert sorted(p.name for p in out[node].iterdir()) == ["arrays.npz", "keep",
                                                               "update.json"]
    raw = [read_csv(out[node] / "keep" / "features.csv") for node in nodes]
    harmonised = [read_csv(out[node] / "keep" / "harmonised.csv") for node in nodes]
    assert list(raw[0][0]) == ["series", "patient", "age", "sex", "diagnosis", *NAMES]
    for rows, n in zip(raw, ns, strict=True):
        assert len(rows) == n
        assert [r["series"] for r in rows] == sorted(r["series"] for r in rows)
    assert {r["age"] for r in raw[1]} == {"69.5"}  # the band's middle, from FHIR
    assert {r["sex"] for r in raw[1]} <= {"female", "male"}  # Patient.gender

    covars = pd.DataFrame([{"batch": i, "age": float(r["age"]), "sex": r["sex"]}
                           for i, rows in enumerate(raw) for r in rows])
    Y = np.array([[float(r[n]) for n in NAMES] for rows in raw for r in rows])
    reference = neuroCombat(dat=Y.T, covars=covars, batch_col="batch",
                            categorical_cols=["sex"], continuous_cols=["age"])
    mine = np.array([[float(r[n]) for n in NAMES] for rows in harmonised for r in rows])
    scale = np.abs(reference["data"]).max(axis=1, keepdims=True)
    difference = np.abs(mine.T - reference["data"]).max()
    print(f"max |step - neuroCombat| = {difference:.3g} (relative "
          f"{(np.abs(mine.T - reference['data']) / scale).max():.3g})")
    assert difference < 1e-6
    np.testing.assert_allclose([a["gamma_star"] for _, a in adjusted],
                               reference["estimates"]["gamma.star"], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose([a["delta_star"] for _, a in adjusted],
                               reference["estimates"]["delta.star"], rtol=1e-8, atol=1e-9)


def test_features_are_deterministic(code, extracts, tmp_path):
    series = features.find_series(extracts["node-a"] / "dicom", "MR", "BRAIN")
    assert series
    first = [features.series_features(s) for s in series]
    again = [features.series_features(s) for s in reversed(series)][::-1]
    for a, b in zip(first, again, strict=True):
        assert a.shape == (len(features.FEATURES),)
        np.testing.assert_array_equal(a, b)
    config = {**CONFIG, "body_part": "BRAIN"}
    one = run_step(code, extracts["node-a"], tmp_path / "1", "moments", "node-a",
                   config=config)
    two = run_step(code, extracts["node-a"], tmp_path / "2", "moments", "node-a",
                   config=config)
    assert one[0] == two[0]
    for name in ("xtx", "xty"):
        np.testing.assert_array_equal(one[1][name], two[1][name])


def test_features_of_a_synthesised_series(extracts):
    series = features.find_series(extracts["node-a"] / "dicom", "MR", "BRAIN")[0]
    values = dict(zip(features.FEATURES, features.series_features(series), strict=True))
    # The synthetic head (spe/synth/pixels.py): brain at 55% of 4095, darkened by age
    # (x0.88 at 100) and passed through the scanner (gain 0.75-1.30, offset +-5%), inside
    # a skull ellipse of pi * 0.86 * 0.74 / 4 of the field; Otsu's foreground lies in it.
    brain = 0.55 * 4095
    assert 0.88 * 0.75 * brain - 0.05 * 4095 <= values["p50"] <= 1.30 * brain + 0.05 * 4095
    assert 0.1 <= values["foreground_fraction"] <= np.pi * 0.86 * 0.74 / 4
    assert 0 < values["glcm_homogeneity"] <= 1
    assert 0 < values["glcm_energy"] <= 1
    assert -1 <= values["glcm_correlation"] <= 1


def test_covariates_from_dicom_and_fhir(extracts):
    clinical = features.read_clinical(extracts["node-a"] / "fhir")
    records = {p["id"]: p for p in map(json.loads, (extracts["node-a"] / "fhir" /
                                                     "Patient.ndjson").read_text().splitlines())}
    for series in features.find_series(extracts["node-a"] / "dicom", "MR"):
        got = features.series_covariates(series, clinical, ["C71"])
        pid = clinical.patient_id(series.patient)
        assert pid in records
        assert got["age"] == float(int(series.age[:3]))
        assert got["sex"] == records[pid]["gender"]
        assert got["diagnosis"] == int(any(c.startswith("C71")
                                           for c in clinical.codes.get(pid, ())))
    # Without the FHIR side, sex still comes from DICOM and diagnosis is unknown.
    alone = features.read_clinical(None)
    series = features.find_series(extracts["node-a"] / "dicom", "MR")[0]
    got = features.series_covariates(series, alone, ["C71"])
    assert got["sex"] in {"male", "female"}
    assert got["diagnosis"] is None
    assert got["age"] is not None  # PatientAge kept in this (raw) extract


def test_glcm_and_otsu_on_known_images():
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.int64)
    matrices = features.cooccurrence([checker], [np.ones((8, 8), bool)], levels=2)
    contrast, homogeneity, energy, correlation = features.texture_features(matrices)
    # Horizontal and vertical neighbours always differ, diagonal ones never do.
    assert contrast == pytest.approx(0.5)
    assert homogeneity == pytest.approx(0.75)
    assert correlation == pytest.approx(0.0)
    assert energy == pytest.approx(np.sqrt(0.5), rel=1e-3)  # diagonals: 25 vs 24 pairs
    values = np.concatenate([np.full(100, 10.0), np.full(50, 200.0)])
    assert 10 < features.otsu_threshold(values) < 200
    assert features.band_middle("40-59") == 49.5
    assert features.dicom_age("018M") == 1.0


def test_a_node_with_too_few_series_sends_an_empty_update_the_gate_refuses(code, extracts,
                                                                          tmp_path):
    """No series of the run's modality here: the step does not fail, it sends zeros of the
    round's shapes with the patients behind them (none), and the gate's minimum refuses it
    in its own words, as for any small count."""
    from spe.federated import gate

    config = {**CONFIG, "modality": "XA"}
    update, arrays = run_step(code, extracts["node-a"], tmp_path / "out", "moments",
                              "node-a", config=config)
    assert update["n"] == 0
    p, f = width(2, CONFIG["covariates"]), len(NAMES)
    assert arrays["xtx"].shape == (p, p)
    assert arrays["xty"].shape == (p, f)
    assert not arrays["xtx"].any()
    checked = gate.check(tmp_path / "out", combat.moments_contract(p, f),
                         min_patients=10, extract_patients=None)
    assert (checked.allow, checked.reason) == (False, "min_patients")
