"""The round history that goes with a federated result passes the airlock's own checks
(gateway/hub/federated/release.py history): it is read as any output is, so neither a
round's number nor a node's attempts may look like a small count of people, and no
timestamp may be in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.hub.federated.release import as_json, history
from spe.airlock import OutputRules, check_outputs

SITES = ("site-a", "site-b", "site-c")


def rounds() -> list[dict]:
    """A ComBat run's three rounds, site-b's second after a retry."""
    out = []
    for number, kind in enumerate(("moments", "variance", "adjust"), start=1):
        nodes = {site: {"state": "accepted", "reason": "", "seconds": 2.0 + i + number / 7,
                        "attempts": 2 if (number, site) == (2, "site-b") else 1,
                        "epsilon": None} for i, site in enumerate(SITES)}
        out.append({"round": number, "kind": kind, "at": f"2026-12-0{number}T10:00:00+00:00",
                    "nodes": nodes, "metrics": {"batch_effect": 0.41 / number}})
    return out


def flower_rounds(privacy: bool = False) -> list[dict]:
    """A Flower run's 21 rounds: train and evaluate ten times, then the disclosure check;
    the nodes' metrics held back from the run's view, an accuracy of 1.0 among them."""
    out = []
    for number in range(1, 22):
        kind = "disclosure" if number == 21 else ("train", "evaluate")[(number - 1) % 2]
        nodes = {site: {"state": "accepted", "reason": "", "seconds": 3.0 + i / 3,
                        "attempts": 1, "epsilon": 0.8 * (number + 1) // 2 if privacy else None}
                 for i, site in enumerate(SITES)}
        held = ({"train_loss": 0.3 / number, "num-examples": 52.0} if kind == "train" else
                {"eval_acc": 1.0 if number > 15 else 0.9, "eval_loss": 0.2,
                 "num-examples": 22.0} if kind == "evaluate" else {})
        out.append({"round": number, "kind": kind, "at": "2026-12-04T10:00:00+00:00",
                    "nodes": nodes, "metrics": {}, "held_metrics": held})
    return out


def verdict(tmp_path: Path, document: dict) -> tuple[str, list[str]]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "rounds.json").write_bytes(as_json(document))
    report = check_outputs(out, rules=OutputRules())
    [entry] = report.files
    return entry.verdict, entry.reasons


def test_the_history_passes_where_the_raw_rounds_are_blocked(tmp_path):
    raw, _ = verdict(tmp_path, {"rounds": rounds(), "privacy": {}})
    assert raw == "blocked"  # the round numbers, the attempts and the dates
    shaped, reasons = verdict(tmp_path, history(rounds(), {}))
    assert shaped != "blocked", reasons


@pytest.mark.parametrize("privacy", [False, True])
def test_a_flower_runs_history_passes(tmp_path, privacy):
    as_records = [{k: v for k, v in r.items() if k != "at"} for r in flower_rounds(privacy)]
    raw, _ = verdict(tmp_path, {"rounds": as_records})
    assert raw == "blocked"  # its rounds repeat: like record-level data
    spent = {s: 8.08 for s in SITES} if privacy else {}
    shaped, reasons = verdict(tmp_path, history(flower_rounds(privacy), spent))
    assert shaped != "blocked", reasons


def test_the_history_keeps_what_a_researcher_reads():
    kept = history(rounds(), {"site-a": 0.8})
    assert kept["kinds"] == ["moments", "variance", "adjust"]
    assert kept["steps"] == [1, 2, 3]
    assert kept["nodes"]["site-b"]["states"] == [
        "accepted", "accepted after two attempts", "accepted"]
    assert kept["metrics"]["mean batch_effect"][0] == 0.41
    assert "2026-12" not in json.dumps(kept)  # no timestamps
    assert kept["privacy"] == {"site-a": 0.8}
    flower = history(flower_rounds(), {})
    assert sorted(flower["metrics"]) == ["mean eval_acc", "mean eval_loss", "mean train_loss"]
    assert flower["metrics"]["mean train_loss"][:2] == [0.3, None]


@pytest.mark.parametrize("value", [0.0, 1.0, 0.37])
def test_a_flower_result_passes_the_airlock(tmp_path, value):
    """A trained model (as model.json) and its disclosure report, as the hub writes them
    (gateway/hub/federated/flower.py), are not blocked: the checkers get to see them, also
    when a weak model's figures are whole (a rate of 0 or 1 is not a count of people)."""
    import numpy as np

    from gateway.hub.federated.flower import model_json
    from spe.federated.apps import disclosure_step

    rng = np.random.default_rng(3)
    model = {"0": rng.normal(0, 1, 8), "1": np.array([-0.731])}
    figures = {name: value for name in disclosure_step.METRICS if name != "review"}
    figures.update(members=40.0, lira_records=40.0)
    disclosure = {"check": "membership and attribute inference at each node",
                  "verdict": "pass",
                  "nodes": {s: {"patients": 45 + i, "verdict": "pass", **figures}
                            for i, s in enumerate(SITES)}}
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.json").write_bytes(as_json(model_json(model)))
    (out / "disclosure.json").write_bytes(as_json(disclosure))
    report = check_outputs(out, rules=OutputRules())
    verdicts = {f.path: (f.verdict, f.reasons) for f in report.files}
    assert all(v != "blocked" for v, _ in verdicts.values()), verdicts
    back = json.loads((out / "model.json").read_text())["arrays"]
    assert np.allclose(np.array(back["0"]), model["0"])
