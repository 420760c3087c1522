"""The benchmarks that report issue figures still run: each at a tiny size, as a smoke test.

Only that they run to the end and write every figure is checked here; what they measure
(speed, shares of cells shown, errors) is reported by the benchmark, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_statistics_utility_runs_at_a_tiny_size_and_writes_its_figures(tmp_path: Path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "statistics_utility.py"),
         "--patients", "40", "--questions", "12", "--targets", "4", "--latency-rounds", "3",
         "--cache", str(tmp_path / "cache"), "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) >= {"setup", "accuracy", "utility", "attack", "latency"}
    utility = figures["utility"]
    assert utility["questions"] == 12
    assert utility["answered"] == 12, utility["errors"]
    assert utility["totals"] == 12
    assert utility["cells"] > 0  # the shares below are over something
    assert [b["bucket"] for b in figures["accuracy"]] == [
        "10-19", "20-49", "50-99", "100-499", "500+"]
    assert figures["attack"]["queries"] > 0
    latency = figures["latency"]
    for kind in ("count", "stratified", "boolean"):
        assert latency[kind]["supported"], latency[kind]
        assert latency[kind]["n"] == 3
    # Every statistic is measured, or reported as not supported (the hub does not know the
    # kind); the script's example query of a supported kind must be accepted.
    for kind in ("mean", "quantiles", "histogram", "table", "correlation", "linear",
                 "logistic", "survival"):
        assert latency[kind]["supported"] or latency[kind]["unknown_kind"], latency[kind]
    assert "2. utility" in proc.stdout
    assert "4. latency" in proc.stdout


@pytest.mark.slow
def test_federated_rounds_runs_at_a_small_size_and_writes_its_figures(tmp_path: Path):
    # At 3 x 30 patients staging generalises the covariates away (k-anonymity) and ComBat
    # has nothing to harmonise; at 3 x 60 its COPD patients' DX chest radiographs are too
    # few for the node's gate (10 patients), so every series is harmonised.
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "federated_rounds.py"),
         "--patients", "60", "--rounds", "2", "--combat-rounds", "1",
         "--series", "", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) >= {"setup", "overhead", "combat"}
    for step in ("one_second_step", "combat_moments"):
        figure = figures["overhead"][step]
        assert figure["federated_median_s"] > 0
        assert figure["direct_median_s"] > 0
        assert figure["ratio"] > 0
    assert figures["overhead"]["one_second_step"]["rounds"] == 2
    combat = figures["combat"]
    assert combat["state"] == "succeeded"
    assert combat["total_s"] > 0
    assert [r["kind"] for r in combat["rounds"]] == ["moments", "variance", "adjust"]
    assert all(r["seconds"] > 0 for r in combat["rounds"])
    assert combat["series_harmonised"] > 0
    assert "1. a round at" in proc.stdout
    assert "2. a distributed ComBat run" in proc.stdout
