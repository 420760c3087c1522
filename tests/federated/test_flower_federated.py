"""A researcher's Flower app run by the hub (`POST /api/v1/fed/runs`, app "flower") over a
federation of real nodes: its ServerApp in the hub's sandbox, each message a gated round
at the nodes, the model, its disclosure report and the round history in the airlock.

The example app (spe/federated/examples/flower_logreg), pointed at the demo sites' chest
radiographs and COPD (J44): 10 rounds of FedAvg reach the accuracy of the same model
trained centrally on the pooled extracts; with differential privacy the epsilon spent is
reported and the accuracy lost measured. Hostile ClientApps (rows or a pseudonym in the
update, a wrong shape, a network call) are stopped at the nodes and nothing of theirs
reaches the hub."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from spe.federated.flower_host import app_components
from spe.settings import REPO_ROOT
from spe.wire.code_archive import pack_code
from tests.federated.conftest import hub_audit
from tests.federated.test_combat_federated import wait
from tests.federated.test_flower_bridge import analysis_python
from tests.gateway.conftest import SITES

pytestmark = pytest.mark.usefixtures("needs_sandbox")

EXAMPLE = REPO_ROOT / "spe" / "federated" / "examples" / "flower_logreg"
# test-share 0.4: site-a has about 45 patients with a chest radiograph, so its test split
# stays above the gate's minimum of 10 whatever the permit's pseudonyms (binomial: 18 +- 3).
CHEST = {"modality": "DX", "body-part": "CHEST", "condition": "J44", "test-share": 0.4}


@pytest.fixture(scope="module")
def run_config(fed_sites, task) -> dict:
    """The run's overrides: the chest radiographs, and the features' centre and scale
    from the sites' data (a researcher gets them from a federated summary query)."""
    analysis_python()  # fails in CI without flwr in the analysis environment
    rows = [task.series_table(path.parent / "synth" / site, "DX", "CHEST", "J44")[1]
            for site, path in fed_sites.items()]
    X = np.concatenate(rows)
    center, scale = np.nanmean(X, axis=0), np.nanstd(X, axis=0) + 1e-9
    return {**CHEST, "feature-center": ",".join(f"{v:.6g}" for v in center),
            "feature-scale": ",".join(f"{v:.6g}" for v in scale)}


def packed(app: Path) -> str:
    return base64.b64encode(pack_code(app)).decode()


def start(hub, permit: str, code: str, config: dict, **extra) -> dict:
    body = {"permit": permit, "app": "flower", "code": code, "config": config,
            "round_timeout": 300, **extra}
    resp = hub.post("/api/v1/fed/runs", json=body, headers=hub.as_("carol", "researcher"))
    assert resp.status_code == 202, resp.text
    return wait(hub, resp.json()["id"], seconds=1200)


def checked(hub, run: dict, name: str) -> bytes:
    """A file of the run's result as an output checker reads it in the airlock."""
    resp = hub.get(f"/api/v1/airlock/requests/{run['airlock']}/inspect/hub/{name}",
                   headers=hub.as_("olga", "output_checker"))
    assert resp.status_code == 200, resp.text
    return resp.content


def model_of(doc: dict) -> list[np.ndarray]:
    return [np.array(doc["arrays"][k]) for k in doc["order"]]


def released_model(hub, run: dict) -> tuple[list[np.ndarray], dict]:
    """The model as its checkers see it in the airlock, and the request's files."""
    full = hub.get(f"/api/v1/airlock/requests/{run['airlock']}",
                   headers=hub.as_("olga", "output_checker"))
    assert full.status_code == 200, full.text
    files = {f["name"]: f for f in full.json()["files"]}
    return model_of(json.loads(checked(hub, run, "model.json"))), files


def extract_of(root: Path, site: str, permit: str) -> Path:
    """The permit's extract as the node staged it."""
    [extract] = {p.parent for p in (root / "extracts" / site / permit).glob("*/dicom")}
    return extract


def pooled_test(root: Path, permit: str, task, config: dict):
    """(X_train, y_train, X_test, y_test) of the nodes' staged extracts, pooled."""
    parts = []
    for site in SITES:
        extract = extract_of(root, site, permit)
        parts.append(task.load_extract(extract, {**dict(task.DEFAULTS), **config}))
    return [np.concatenate([p[i] for p in parts]) for i in range(4)]


def accuracy(task, arrays, X, y) -> float:
    return float(np.mean((task.predict_proba(arrays, X)[:, 1] >= 0.5) == y))


@pytest.fixture(scope="module")
def trained(fed_federation, fed_permit, run_config):
    hub = fed_federation[0]
    return start(hub, fed_permit, packed(EXAMPLE), run_config)


def test_a_flower_app_trains_over_three_nodes_as_well_as_centrally(
        fed_federation, trained, run_config, task):
    hub, _, _, root = fed_federation
    run = trained
    assert run["state"] == "succeeded", (run["reason"], run["rounds"][-1:])
    kinds = [r["kind"] for r in run["rounds"]]
    assert kinds == ["train", "evaluate"] * 10 + ["disclosure"], kinds
    assert all(s["state"] == "accepted" for r in run["rounds"] for s in r["nodes"].values())
    assert set(run["rounds"][0]["nodes"]) == set(SITES)
    # What the researcher's code computed from the nodes' replies is not shown with the
    # run: it reaches the researcher with the result, through the checkers.
    assert all(r["metrics"] == {} for r in run["rounds"])
    # Nor how long its ClientApp ran at each node: a timing the app controls.
    assert all(s["seconds"] == 0 for r in run["rounds"] for s in r["nodes"].values())

    federated, files = released_model(hub, run)
    assert sorted(files) == ["hub/disclosure.json", "hub/model.json", "hub/rounds.json"]
    assert all(f["stored"] for f in files.values()), {
        n: (f.get("verdict"), f.get("reasons")) for n, f in files.items()}
    X_train, y_train, X_test, y_test = pooled_test(root, run["permit"], task, run_config)
    central = task.fit(X_train, y_train, {**dict(task.DEFAULTS), **run_config})
    fed_acc = accuracy(task, federated, X_test, y_test)
    central_acc = accuracy(task, central, X_test, y_test)
    base = max(y_test.mean(), 1 - y_test.mean())
    print(f"\n{len(y_train)} training and {len(y_test)} test patients at {len(SITES)} sites; "
          f"test accuracy: federated {fed_acc:.3f}, central {central_acc:.3f}, "
          f"base rate {base:.3f}")
    assert abs(fed_acc - central_acc) <= 0.02


def test_the_model_goes_with_its_disclosure_report_and_history(fed_federation, trained):
    hub = fed_federation[0]
    report = json.loads(checked(hub, trained, "disclosure.json"))
    assert set(report["nodes"]) == set(SITES)
    for figures in report["nodes"].values():
        assert 0 <= figures["worst_case_auc"] <= 1
        assert 0 <= figures["lira_auc"] <= 1
        assert figures["verdict"] in {"pass", "review"}
    history = json.loads(checked(hub, trained, "rounds.json"))
    assert all(v > 0 for v in history["nodes"]["site-a"]["seconds"])  # for the checkers
    losses = [v for v, kind in zip(history["metrics"]["mean train_loss"], history["kinds"],
                                   strict=True) if kind == "train"]
    assert len(losses) == 10, losses
    assert losses[-1] < losses[0], losses
    print("pooled train loss by round: " + ", ".join(f"{v:.4f}" for v in losses))


def test_with_differential_privacy_the_spend_is_reported_and_the_loss_measured(
        fed_federation, run_config, task, trained):
    from tests.federated.conftest import issue_permit

    hub, _, _, root = fed_federation
    permit = issue_permit(hub)  # a budget of its own
    # Gradient steps (noise on a Hessian's 90 entries swamps a Newton step), the nodes'
    # gradients themselves clipped and noised (they are not a change of the model).
    privacy = {"clip": 0.05, "noise_multiplier": 2.0, "delta": 1e-5, "relative": False}
    run = start(hub, permit, packed(EXAMPLE),
                {**run_config, "newton": False, "learning-rate": 4.0}, privacy=privacy)
    assert run["state"] == "succeeded", (run["reason"], run["rounds"][-1:])
    assert set(run["privacy"]) == set(SITES)
    spent = run["privacy"]
    assert all(0 < eps <= 10 for eps in spent.values()), spent
    noisy, _ = released_model(hub, run)
    plain, _ = released_model(hub, trained)
    _, _, X_test, y_test = pooled_test(root, permit, task, run_config)
    plain_acc, dp_acc = accuracy(task, plain, X_test, y_test), accuracy(task, noisy, X_test,
                                                                        y_test)
    print(f"\ndifferential privacy (clip {privacy['clip']}, noise multiplier "
          f"{privacy['noise_multiplier']}, delta {privacy['delta']}): epsilon per node "
          + ", ".join(f"{n} {e:.2f}" for n, e in sorted(spent.items()))
          + f"; test accuracy {dp_acc:.3f} against {plain_acc:.3f} without "
          f"({plain_acc - dp_acc:+.3f} lost)")
    assert noisy[0].shape == plain[0].shape


HOSTILE = '''
"""A ClientApp that tries to get data out of the node; flower_logreg's otherwise."""
import json
import os
import socket
import time

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flower_logreg import task
from flower_logreg.client_app import EXTRACT
from flower_logreg.client_app import app as plain

app = ClientApp()


def _out(arrays, metrics, n):
    """Past client_step's checks: the update files written directly, then exit."""
    np.savez("/output/arrays.npz", **arrays)
    with open("/output/update.json", "w") as f:
        json.dump({"n": n, "metrics": metrics}, f)
    os._exit(0)


@app.train()
def train(msg, context):
    mode = context.run_config["attack"]
    if mode in ("first-node-fails", "first-node-hangs"):  # the example's, but not at node 1
        if context.node_config["partition-id"] == 0:
            if mode == "first-node-hangs":
                time.sleep(40)
            raise ValueError("this node fails")
        return plain(msg, context)
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    X, y, _, _ = task.load_extract(EXTRACT, context.run_config)
    ids = task.series_table(EXTRACT, "DX", "CHEST", "J44")[0]
    if mode == "rows":
        _out({"0": X, "1": arrays[1]}, {"num-examples": len(X)}, len(X))
    if mode == "pseudonym":
        _out({"0": arrays[0], "1": arrays[1]}, {"num-examples": len(X), ids[0]: 1.0}, len(X))
    if mode == "shape":
        record = ArrayRecord([np.zeros(arrays[0].size + 5), arrays[1]])
        return Message(RecordDict({"arrays": record, "metrics": MetricRecord(
            {"num-examples": len(X)})}), reply_to=msg)
    if mode == "network":
        socket.create_connection((context.run_config["hub-host"],
                                  int(context.run_config["hub-port"])), timeout=3)
        raise SystemExit("connected")
    raise ValueError(mode)


@app.evaluate()
def evaluate(msg, context):
    return plain(msg, context)
'''


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory) -> str:
    app = tmp_path_factory.mktemp("hostile") / "app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "flower_logreg" / "hostile.py").write_text(HOSTILE)
    project = (app / "pyproject.toml").read_text().replace(
        'clientapp = "flower_logreg.client_app:app"',
        'clientapp = "flower_logreg.hostile:app"')
    (app / "pyproject.toml").write_text(project)
    assert app_components(app)[1] == "flower_logreg.hostile:app"
    return packed(app)


@pytest.mark.parametrize(("attack", "reason"), [
    ("rows", "shape"), ("pseudonym", "names"), ("shape", "shape"),
    ("network", "step_failed")])
def test_a_hostile_clientapp_is_stopped_at_the_gate(fed_federation, fed_sites, fed_permit,
                                                    run_config, hostile_app, task, attack,
                                                    reason):
    from spe.wire.rounds import GATE_REASONS

    hub, urls, _, root = fed_federation
    host, port = urls[SITES[0]].removeprefix("https://").rsplit(":", 1)
    run = start(hub, fed_permit, hostile_app,
                {**run_config, "attack": attack, "hub-host": host, "hub-port": port,
                 "num-server-rounds": 1})
    assert run["state"] == "failed", run
    [first] = run["rounds"]
    assert first["kind"] == "train"
    states = {n: (s["state"], s["reason"]) for n, s in first["nodes"].items()}
    assert all(s != "accepted" for s, _ in states.values()), states
    assert all(why == GATE_REASONS[reason] for _, why in states.values()), states
    assert run["airlock"] is None  # nothing to review: no model left the hub's sandbox
    # Audited at the hub (the round) and at each node (its gate's decision).
    at_hub = [e for e in hub_audit(hub) if e["object"].startswith(f"fed:{run['id']}")]
    assert any(e["action"] == "fed.round" for e in at_hub)
    for site, db in fed_sites.items():
        with sqlite3.connect(db) as con:
            gate = con.execute("SELECT decision, reason FROM audit_log WHERE action = "
                               "'fed.gate' AND object = ?", (f"fed:{run['id']}/1",)).fetchall()
        assert gate == [("deny", GATE_REASONS[reason])], (site, gate)
    # Nothing of what the app tried to send reached the hub: not a pseudonym of the
    # node's extract, in the run's record or the hub's audit.
    text = json.dumps(run) + json.dumps(at_hub)
    for site in SITES:
        ids = task.series_table(extract_of(root, site, fed_permit), "DX", "CHEST", "J44")[0]
        assert ids
        assert not [i for i in ids if i in text]


@pytest.mark.parametrize("rule", ["stop", "retry", "skip"])
def test_a_failing_node_is_handled_by_the_runs_rule(fed_federation, fed_permit, run_config,
                                                   hostile_app, rule):
    """The run's first node (site-a) fails every round: "stop" ends the run there, "retry"
    sends it again (then stops), "skip" drops it and the others finish the run."""
    hub = fed_federation[0]
    run = start(hub, fed_permit, hostile_app,
                {**run_config, "attack": "first-node-fails", "num-server-rounds": 1},
                on_failure=rule, retries=2, min_nodes=2)
    first = run["rounds"][0]["nodes"]
    assert first["site-a"]["state"] == "failed", first
    assert first["site-a"]["attempts"] == (3 if rule == "retry" else 1)
    assert {first[n]["state"] for n in ("site-b", "site-c")} == {"accepted"}
    if rule == "skip":
        assert run["state"] == "succeeded", run["reason"]
        assert [r["kind"] for r in run["rounds"]] == ["train", "evaluate", "disclosure"]
        assert all(set(r["nodes"]) == {"site-b", "site-c"} for r in run["rounds"][1:])
        assert run["airlock"]
    else:
        assert run["state"] == "failed"
        assert len(run["rounds"]) == 1
        assert "site-a" in run["reason"]
        assert run["airlock"] is None


def test_a_node_that_does_not_answer_in_time_is_skipped(fed_federation, fed_permit,
                                                        run_config, hostile_app, trained):
    """site-a's step outlasts the round's timeout: the hub stops waiting, records it, and
    with "skip" the others finish the run. After `trained`, so that the permit's extract
    is staged at every node already and only site-a's step is slow."""
    hub = fed_federation[0]
    run = start(hub, fed_permit, hostile_app,
                {**run_config, "attack": "first-node-hangs", "num-server-rounds": 1},
                on_failure="skip", min_nodes=2, round_timeout=20)
    first = run["rounds"][0]["nodes"]
    assert first["site-a"]["state"] == "failed", first
    assert "unreachable" in first["site-a"]["reason"], first
    assert run["state"] == "succeeded", run["reason"]
    assert all(set(r["nodes"]) == {"site-b", "site-c"} for r in run["rounds"][1:])


def test_the_researcher_gets_the_model_after_two_output_checkers(fed_federation, trained):
    hub = fed_federation[0]
    checked_model, _ = released_model(hub, trained)
    carol = hub.as_("carol", "researcher")
    url = f"/api/v1/airlock/requests/{trained['airlock']}/files/hub/model.json"
    assert hub.get(url, headers=carol).status_code in (403, 404, 409)
    for who in ("olga", "oscar"):
        resp = hub.post(f"/api/v1/airlock/requests/{trained['airlock']}/reviews",
                        json={"decision": "approve", "reason": f"{who} looked"},
                        headers=hub.as_(who, "output_checker"))
        assert resp.status_code == 200, resp.text
    got = hub.get(url, headers=carol)
    assert got.status_code == 200, got.text
    assert np.allclose(model_of(got.json())[0], checked_model[0])
