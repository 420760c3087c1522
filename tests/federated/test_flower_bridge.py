"""An unmodified Flower app (spe/federated/examples/flower_logreg) across the SPE's boundary:
its ServerApp in a sandbox "at the hub" whose Grid is files in the job's scratch folder
(spe/federated/apps/flower/server_step.py), served by spe.federated.flower_host.GridHost;
each node's message a sandboxed run of its ClientApp over that node's extract
(client_step.py), in-process, no HTTP. The nodes' updates are read plainly here (the gate
is tested on its own)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from spe.federated.flower_host import (
    GridHost,
    GridProtocolError,
    NodeReply,
    NodeRequest,
    app_components,
    client_config,
    server_config,
)
from spe.sandbox import Limits, run
from spe.settings import REPO_ROOT
from tests.conftest import IN_CI

APPS = REPO_ROOT / "spe" / "federated" / "apps"
STEPS = [APPS / "steplib.py", APPS / "flower" / "client_step.py",
         APPS / "flower" / "server_step.py"]
EXAMPLE = REPO_ROOT / "spe" / "federated" / "examples" / "flower_logreg"
LIMITS = Limits(cpu_seconds=120, memory_mb=2048, processes=64, open_files=256,
                file_size_mb=64, output_mb=64, scratch_mb=64, wall_seconds=120)
SITES = 3
PATIENTS = 120  # per site, one MR series each


def analysis_python() -> str:
    """The analysis environment's python, with flwr; skipped (failed in CI) without it."""
    python = os.environ.get("SPE_SANDBOX_PYTHON") or str(
        REPO_ROOT / "var" / "analysis-env" / "statistics" / "bin" / "python")
    ok = Path(python).exists() and subprocess.run(
        [python, "-c", "import flwr.clientapp, flwr.serverapp"], capture_output=True,
        timeout=60).returncode == 0
    if not ok:
        reason = ("no analysis environment with flwr (make analysis-env; "
                  "SPE_SANDBOX_PYTHON)")
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return python


@pytest.fixture(scope="module")
def python(needs_sandbox_module) -> str:
    return analysis_python()


@pytest.fixture(scope="module")
def needs_sandbox_module() -> None:
    from tests.conftest import bwrap_problem

    reason = bwrap_problem()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason}; the sandbox is required in CI")
        pytest.skip(reason)


# Synthetic extracts: one MR series per patient (2 slices of 32x32, 12 bits), age and sex in
# the header, a glioma (C71.9) Condition in FHIR; gliomas are brighter and more textured.
def write_extract(root: Path, site: int, patients: int = PATIENTS) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    rng = np.random.default_rng(1000 + site)
    (root / "dicom").mkdir(parents=True)
    (root / "fhir").mkdir()
    fhir_patients, conditions = [], []
    top = 4095
    y, x = np.ogrid[-1:1:32j, -1:1:32j]
    inside = (x / 0.8) ** 2 + (y / 0.65) ** 2 <= 1.0
    for i in range(patients):
        pid = f"S{site}P{i:03d}"
        glioma = rng.random() < 0.4
        age = int(np.clip(rng.normal(52 + 10 * glioma, 13), 18, 95))
        sex = "F" if rng.random() < 0.5 else "M"
        fhir_patients.append({"resourceType": "Patient", "id": f"pat-{pid}",
                              "identifier": [{"value": pid}],
                              "gender": {"F": "female", "M": "male"}[sex]})
        if glioma:
            conditions.append({"resourceType": "Condition", "id": f"c-{pid}",
                               "subject": {"reference": f"Patient/pat-{pid}"},
                               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                                    "code": "C71.9"}]}})
        series = generate_uid(entropy_srcs=[pid, "series"])
        study = generate_uid(entropy_srcs=[pid, "study"])
        level = 0.55 + 0.04 * glioma + 0.01 * site + rng.normal(0, 0.03)
        noise = 0.03 + 0.015 * glioma + rng.normal(0, 0.006)
        for number in (1, 2):
            image = np.where(inside, level, 0.05) + rng.normal(0, abs(noise), (32, 32))
            pixels = (np.clip(image, 0, 1) * top).astype(np.uint16)
            sop = generate_uid(entropy_srcs=[pid, str(number)])
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = sop
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.Modality, ds.PatientID, ds.PatientSex = "MR", pid, sex
            ds.PatientAge = f"{age:03d}Y"
            ds.InstanceNumber = number
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = 32
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = pixels.tobytes()
            folder = root / "dicom" / pid / series[-12:]
            folder.mkdir(parents=True, exist_ok=True)
            pydicom.dcmwrite(folder / f"{number:04d}.dcm", ds, enforce_file_format=True)
    (root / "fhir" / "Patient.ndjson").write_text(
        "".join(json.dumps(p) + "\n" for p in fhir_patients))
    (root / "fhir" / "Condition.ndjson").write_text(
        "".join(json.dumps(c) + "\n" for c in conditions))


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("extracts")
    paths = []
    for site in range(SITES):
        write_extract(root / f"site{site}", site)
        paths.append(root / f"site{site}")
    return paths


def code_dir(folder: Path, app: Path = EXAMPLE) -> Path:
    """A step's /code: the app under app/, the steps beside it, an empty _round/."""
    shutil.copytree(app, folder / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for step in STEPS:
        shutil.copy(step, folder / step.name)
    (folder / "_round").mkdir()
    return folder


def write_round(code: Path, run_name: str, number: int, config: dict,
                arrays: dict[str, np.ndarray] | None = None) -> None:
    (code / "_round" / "round.json").write_text(json.dumps(
        {"run": run_name, "round": number, "kind": "flower", "node": "n", "config": config}))
    (code / "_round" / "arrays.npz").unlink(missing_ok=True)
    if arrays:
        np.savez(code / "_round" / "arrays.npz", **arrays)


def read_update(output: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The update a step left (what the gate would check; here read as it is)."""
    update = json.loads((output / "update.json").read_text())
    if not (output / "arrays.npz").exists():  # an evaluation's: metrics only
        return {}, update
    with np.load(output / "arrays.npz", allow_pickle=False) as npz:
        return {k: np.array(npz[k]) for k in npz.files}, update


class Nodes:
    """The nodes' side for the GridHost: each request a sandboxed client_step run."""

    def __init__(self, root: Path, extracts: list[Path], python: str, clientapp: str,
                 run_config: dict) -> None:
        self.root, self.extracts, self.python = root, extracts, python
        self.clientapp, self.run_config = clientapp, run_config
        self.codes = [code_dir(root / f"code{i}") for i in range(len(extracts))]
        self.seconds: list[float] = []  # each node step's, in the sandbox

    def one(self, seq: int, request: NodeRequest) -> NodeReply:
        i = request.node_int - 1
        code = self.codes[i]
        config = client_config(request, clientapp=self.clientapp, run_config=self.run_config,
                               partition=i, partitions=len(self.extracts))
        write_round(code, "flower-test", seq, config, request.arrays)
        output = self.root / f"out-{seq}-{i}"
        output.mkdir()
        result = run(code, "client_step.py", self.extracts[i], output, LIMITS,
                     python=self.python)
        self.seconds.append(result.wall_seconds)  # (list.append: thread-safe)
        if result.state != "succeeded":
            return NodeReply(request.node_int, False, error="step_failed")
        arrays, update = read_update(output)
        return NodeReply(request.node_int, True, arrays=arrays, metrics=update["metrics"],
                         n=update["n"])

    def handle(self, seq: int, requests: list[NodeRequest]) -> list[NodeReply]:
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            return list(pool.map(lambda r: self.one(seq, r), requests))


def run_app(tmp_path: Path, python: str, extracts: list[Path], run_config: dict,
            nodes_class: type[Nodes] = Nodes) -> tuple[object, int, Nodes, float]:
    """(the hub job's result, requests served, the nodes, seconds) of a whole run."""
    serverapp, clientapp, _ = app_components(EXAMPLE)
    # The hub's job: the ServerApp, its grid in the shared scratch folder.
    hub = code_dir(tmp_path / "hub")
    scratch, hub_out = tmp_path / "scratch", tmp_path / "hub-out"
    scratch.mkdir()
    hub_out.mkdir()
    empty = tmp_path / "no-extract"
    empty.mkdir()
    write_round(hub, "flower-test", 0, server_config(
        serverapp=serverapp, run_config=run_config, nodes=SITES, timeout=120))
    nodes = nodes_class(tmp_path / "nodes", extracts, python, clientapp, run_config)
    stop, cancel = threading.Event(), threading.Event()
    done: dict = {}

    def hub_job() -> None:
        try:
            done["result"] = run(hub, "server_step.py", empty, hub_out,
                                 LIMITS.model_copy(update={"wall_seconds": 600}),
                                 scratch_dir=scratch, python=python, cancel=cancel)
        finally:
            stop.set()

    started = time.monotonic()
    thread = threading.Thread(target=hub_job)
    thread.start()
    try:
        served = GridHost(range(1, SITES + 1)).serve(scratch, nodes.handle, stop_event=stop)
    finally:
        if not stop.is_set():  # serve refused the grid's files: stop the hub's job
            cancel.set()
        thread.join(60)
    return done["result"], served, nodes, time.monotonic() - started


def test_a_flower_app_runs_across_the_sandbox_and_matches_central_training(
        tmp_path: Path, python: str, extracts: list[Path], task) -> None:
    _, _, run_config = app_components(EXAMPLE)
    assert run_config["num-server-rounds"] == 10
    result, served, nodes, elapsed = run_app(tmp_path, python, extracts, run_config)
    assert result.state == "succeeded", result.stderr_tail
    hub_out = tmp_path / "hub-out"
    rounds = run_config["num-server-rounds"]
    assert served == 2 * rounds  # a train and an evaluate request each round
    assert len(nodes.seconds) == 2 * rounds * SITES
    per_round = elapsed / rounds
    print(f"\n{rounds} rounds, {len(nodes.seconds)} node steps in {elapsed:.1f} s: "
          f"{per_round:.2f} s a round, a node step {np.mean(nodes.seconds):.2f} s")
    assert "aggregate_train: Received 3 results and 0 failures" in \
        result.stdout_tail + result.stderr_tail

    with np.load(hub_out / "model.npz", allow_pickle=False) as npz:
        federated = [np.array(npz[k]) for k in sorted(npz.files)]
    parts = [task.load_extract(e, run_config) for e in extracts]
    X_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    X_test = np.concatenate([p[2] for p in parts])
    y_test = np.concatenate([p[3] for p in parts])
    central = task.fit(X_train, y_train, run_config)
    assert task.predict_proba(federated, X_test).shape == (len(X_test), 2)

    def accuracy(arrays: list[np.ndarray]) -> float:
        return float(np.mean((task.predict_proba(arrays, X_test)[:, 1] >= 0.5) == y_test))

    fed_acc, central_acc = accuracy(federated), accuracy(central)
    print(f"test accuracy ({len(y_test)} series, pooled): federated {fed_acc:.3f}, "
          f"central {central_acc:.3f}; base rate {max(y_test.mean(), 1 - y_test.mean()):.3f}")
    assert central_acc > max(y_test.mean(), 1 - y_test.mean()) + 0.1  # it learns something
    assert abs(fed_acc - central_acc) <= 0.02


class ThirdNodeFails(Nodes):
    def one(self, seq: int, request: NodeRequest) -> NodeReply:
        if request.node_int == 3:
            return NodeReply(3, False, error="step_failed" if seq % 2 else "min_patients")
        return super().one(seq, request)


def test_a_node_that_fails_or_is_refused_counts_as_the_strategys_failure(
        tmp_path: Path, python: str, extracts: list[Path]) -> None:
    _, _, run_config = app_components(EXAMPLE)
    run_config["num-server-rounds"] = 2
    result, served, nodes, _ = run_app(tmp_path, python, extracts, run_config,
                                       ThirdNodeFails)
    assert result.state == "succeeded", result.stderr_tail
    log = result.stdout_tail + result.stderr_tail
    assert served == 4
    assert len(nodes.seconds) == 8
    assert "aggregate_train: Received 2 results and 1 failures" in log
    assert "aggregate_evaluate: Received 2 results and 1 failures" in log
    assert "Received error in reply from node 3: min_patients" in log
    assert (tmp_path / "hub-out" / "model.npz").exists()


BAD_APP = '''
import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg, context):
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    mode = context.run_config["mode"]
    if mode == "raise":
        raise ValueError("patient S0P001 is 67")
    if mode == "shape":
        arrays = [np.zeros(arrays[0].size + 5), arrays[1]]
    record = ArrayRecord(arrays)
    if mode == "extra":
        record["leak"] = ArrayRecord([np.arange(4.0)])["0"]
    metrics = MetricRecord({"num-examples": 7, "train_loss": 0.5})
    return Message(RecordDict({"arrays": record, "metrics": metrics}), reply_to=msg)
'''


@pytest.mark.parametrize("mode", ["shape", "extra", "raise"])
def test_what_a_clientapp_replies_reaches_the_update_files_as_it_is(
        tmp_path: Path, python: str, extracts: list[Path], mode: str) -> None:
    """A reply of a wrong shape or with an extra key is written as the app made it (the
    gate refuses it by the round's contract); an app that raises fails the step, and its
    words (which may hold data) are not in the step's stderr."""
    app = tmp_path / "badapp"
    (app / "bad").mkdir(parents=True)
    (app / "bad" / "__init__.py").write_text("")
    (app / "bad" / "client_app.py").write_text(BAD_APP)
    code = code_dir(tmp_path / "code", app)
    request = NodeRequest(1, "train", {"0": np.zeros(8), "1": np.zeros(1)}, {"lr": 0.1},
                          group_id="1")
    write_round(code, "flower-test", 1, client_config(
        request, clientapp="bad.client_app:app", run_config={"mode": mode},
        partition=0, partitions=3), request.arrays)
    output = tmp_path / "out"
    output.mkdir()
    result = run(code, "client_step.py", extracts[0], output, LIMITS, python=python)
    if mode == "raise":
        assert result.state == "failed"
        assert result.exit_code == 1
        assert "ValueError" in result.stderr_tail
        assert "S0P001" not in result.stderr_tail
        assert not (output / "update.json").exists()
        return
    assert result.state == "succeeded", result.stderr_tail
    arrays, update = read_update(output)
    assert update == {"n": 7, "metrics": {"num-examples": 7.0, "train_loss": 0.5}}
    if mode == "shape":
        assert arrays["0"].shape == (13,)
    else:
        assert set(arrays) == {"0", "1", "leak"}


# The host's reading of what the sandbox wrote, without a sandbox.
def _npz(arrays: dict, compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _serve_one(scratch: Path, request: dict, npz: bytes, replies=None) -> list[NodeRequest]:
    grid = scratch / "grid"
    grid.mkdir(exist_ok=True)
    (grid / "request-1.npz").write_bytes(npz)
    (grid / "request-1.json").write_text(json.dumps(request))
    seen: list[NodeRequest] = []
    stop = threading.Event()

    def handle(seq: int, requests: list[NodeRequest]) -> list[NodeReply]:
        seen.extend(requests)
        stop.set()
        return replies or [NodeReply(r.node_int, True, arrays={"w": r.arrays["w"] + 1},
                                     metrics={"num-examples": 3.0}, n=3) for r in requests]

    GridHost([1, 2]).serve(scratch, handle, stop_event=stop, poll=0.001)
    return seen


def test_the_host_reads_requests_and_writes_replies(tmp_path: Path) -> None:
    message = {"node": 1, "message_id": "m", "message_type": "train", "group_id": "1",
               "ttl": 60.0, "arrays_record": "arrays", "array_keys": ["w"],
               "config_record": "config", "config": {"lr": 0.1, "server-round": 1}}
    seen = _serve_one(tmp_path, {"seq": 1, "messages": [message, {**message, "node": 2}]},
                      _npz({"1/w": np.ones(2), "2/w": np.zeros(2)}),
                      [NodeReply(1, True, arrays={"w": np.full(2, 5.0)},
                                 metrics={"num-examples": 3}, n=3),
                       NodeReply(2, False, error="min_patients")])
    assert [(r.node_int, r.config) for r in seen] == [(1, message["config"]),
                                                       (2, message["config"])]
    reply = json.loads((tmp_path / "grid" / "reply-1.json").read_text())
    assert reply["replies"][1] == {"node": 2, "ok": False, "n": None, "metrics": {},
                                   "array_keys": [], "error": "min_patients"}
    with np.load(tmp_path / "grid" / "reply-1.npz") as npz:
        assert npz.files == ["1/w"]
        assert npz["1/w"].tolist() == [5.0, 5.0]


@pytest.mark.parametrize("bad", ["link", "unknown_node", "twice", "compressed", "stray",
                                 "nested_value"])
def test_the_host_refuses_what_the_sandbox_should_not_write(tmp_path: Path, bad: str) -> None:
    message = {"node": 1, "message_type": "train", "array_keys": ["w"], "config": {}}
    request = {"seq": 1, "messages": [message]}
    arrays = {"1/w": np.ones(2)}
    if bad == "unknown_node":
        request["messages"] = [{**message, "node": 9}]
        arrays = {"9/w": np.ones(2)}
    if bad == "twice":
        request["messages"] = [message, message]
    if bad == "stray":
        arrays["2/x"] = np.ones(1)
    if bad == "nested_value":
        request["messages"] = [{**message, "config": {"k": {"nested": 1}}}]
    npz = _npz(arrays, compress=bad == "compressed")
    if bad == "link":
        secret = tmp_path / "secret.json"
        secret.write_text(json.dumps(request))
        (tmp_path / "grid").mkdir()
        (tmp_path / "grid" / "request-1.npz").write_bytes(npz)
        (tmp_path / "grid" / "request-1.json").symlink_to(secret)
        with pytest.raises(GridProtocolError, match="link"):
            GridHost([1]).serve(tmp_path, lambda s, r: [], stop_event=threading.Event())
        return
    with pytest.raises(GridProtocolError):
        _serve_one(tmp_path, request, npz)


def test_a_compressed_bomb_is_never_inflated(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("1/w.npy", b"\0" * (80 * 1024 * 1024))
    assert len(buffer.getvalue()) < 1024 * 1024
    with pytest.raises(GridProtocolError, match="compressed"):
        _serve_one(tmp_path, {"seq": 1, "messages": [
            {"node": 1, "message_type": "train", "array_keys": ["w"], "config": {}}]},
            buffer.getvalue())
