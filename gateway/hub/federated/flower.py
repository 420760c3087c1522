"""A researcher's Flower app in rounds: its ServerApp in a sandbox at the hub, each batch
of its messages a round at the nodes through their gates.

The ServerApp (spe/federated/apps/flower/server_step.py) runs in the hub's sandbox with no
network and no data; its Grid writes each batch of messages into the job's scratch folder.
`GridHost.serve` (spe.federated.flower_host) reads them in a thread and hands each batch to
`_Batches.handle`, which sends it as a round (`Rounds.send`, in the service's event loop):
every node runs its message with the ClientApp in its own sandbox (client_step.py), and
its gate checks the reply against the round's contract (the message's arrays, same names
and shapes; the metrics the app declares; the patients behind it; with a privacy setting,
clipping and noise on train updates) before anything leaves. The gated replies go back to
the ServerApp, never to the researcher; what the nodes' metrics pool to is kept for the
result's history (`hold`), since the researcher's code computed it. When the ServerApp
ends, the model it wrote (`/output/model.npz`) goes through a last round at every node,
the disclosure check (disclosure_step.py with model_risk.py: membership and attribute
inference, with the app's hooks), and then, as `model.json` (the airlock reads no .npz),
with that report and the round history to the airlock and its two checkers.

What a researcher's app declares in its pyproject.toml besides Flower's own sections:

    [tool.spe.flower]
    metrics = ["train_loss", "eval_loss", "eval_acc"]   # what a reply may carry
    task = "flower_logreg.task"        # the module with load_extract, predict_proba, fit
    attribute = "sex"                  # optional: the attribute inference's column

Without `task` the model goes to the airlock with no automatic check, and says so.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from gateway.hub.federated.release import as_json, history, release
from gateway.hub.federated.runs import Rounds, RunStopped, arrays_of, set_airlock
from spe.db import session_scope
from spe.federated.apps import disclosure_step
from spe.federated.flower_host import (
    GridHost,
    GridProtocolError,
    NodeReply,
    NodeRequest,
    app_components,
    client_config,
    server_config,
)
from spe.federated.models import FedRun
from spe.sandbox import Limits, run
from spe.wire.code_archive import CodeArchiveError, pack_code, unpack_code
from spe.wire.jobs import InvalidJob
from spe.wire.rounds import MAX_METRICS, ArraySpec, Contract, MetricSpec

log = logging.getLogger(__name__)
APPS = Path(__file__).resolve().parents[3] / "spe" / "federated" / "apps"
NUM_EXAMPLES = "num-examples"
MODEL = "model.npz"
ARRAY_RANGE = 1e6  # an update's values: a model's parameters, not a payload
METRIC_RANGE = 1e9
MODULE = re.compile(r"^[A-Za-z_][\w.]{0,127}$")


def app_settings(app_dir: Path) -> dict[str, Any]:
    """The app's [tool.spe.flower] section, checked (InvalidJob names what is wrong)."""
    data = tomllib.loads((app_dir / "pyproject.toml").read_text())
    section = data.get("tool", {}).get("spe", {}).get("flower", {})
    metrics = section.get("metrics", [])
    if not isinstance(metrics, list) or not all(
            isinstance(m, str) and 0 < len(m) <= 64 for m in metrics) \
            or len(metrics) >= MAX_METRICS:
        raise InvalidJob(f"[tool.spe.flower] metrics: a list of at most {MAX_METRICS - 1} "
                         "metric names")
    task = section.get("task")
    if task is not None and (not isinstance(task, str) or not MODULE.match(task)):
        raise InvalidJob("[tool.spe.flower] task: the module of the app's hooks, "
                         "'package.module'")
    attribute = section.get("attribute")
    if attribute is not None and not isinstance(attribute, (str, int)):
        raise InvalidJob("[tool.spe.flower] attribute: a column's name or index")
    return {"metrics": sorted({*metrics, NUM_EXAMPLES}), "task": task,
            "attribute": attribute}


def unpack_app(code: str, folder: Path) -> Path:
    """The app's folder (the one holding pyproject.toml) of a run's base64 tar.gz."""
    try:
        unpack_code(base64.b64decode(code, validate=True), folder)
    except (ValueError, CodeArchiveError) as exc:
        raise InvalidJob(f"code: not the base64 tar.gz of a Flower app's folder ({exc})"
                         [:300]) from None
    if (folder / "pyproject.toml").is_file():
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir() and (p / "pyproject.toml").is_file()]
    if len(inner) != 1:
        raise InvalidJob("code: no pyproject.toml at the app folder's top")
    return inner[0]


def check_submission(body: Any) -> None:
    """Refuse an app the hub could not run (its archive, its pyproject.toml's Flower and
    SPE sections, the run config's overrides), before anything is sent."""
    with tempfile.TemporaryDirectory() as tmp:
        app_dir = unpack_app(body.code or "", Path(tmp) / "app")
        try:
            app_components(app_dir)
        except (ValueError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidJob(f"pyproject.toml: {exc}"[:300]) from None
        app_settings(app_dir)
        _run_config(app_dir, body.config)


def _packed(app_dir: Path, steps: tuple[str, ...]) -> str:
    """base64 tar.gz of a node's /code: the app under app/, the steps beside it."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(app_dir, Path(tmp) / "app",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for step in steps:
            shutil.copy(APPS / step, Path(tmp) / Path(step).name)
        return base64.b64encode(pack_code(tmp)).decode()


def _run_config(app_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    _, _, run_config = app_components(app_dir)
    bad = [k for k, v in overrides.items()
           if isinstance(v, (dict, list)) or v is None]
    if bad:
        raise InvalidJob(f"config: {', '.join(sorted(bad))}: a Flower run config holds "
                         "numbers, strings and booleans")
    return {**run_config, **overrides}


class _Batches:
    """The GridHost's handler: each batch of the ServerApp's messages, a gated round."""

    def __init__(self, rounds: Rounds, loop: asyncio.AbstractEventLoop, *, code: str,
                 clientapp: str, run_config: dict[str, Any], metrics: list[str]) -> None:
        self.rounds, self.loop, self.code = rounds, loop, code
        self.clientapp, self.run_config, self.metrics = clientapp, run_config, metrics
        self.nodes = list(rounds.active)  # grid int i + 1 -> node id
        self.failure: BaseException | None = None
        self.pending: Any = None  # the round in flight (cancelled with the run)

    def handle(self, seq: int, requests: list[NodeRequest]) -> list[NodeReply]:
        future = asyncio.run_coroutine_threadsafe(self._batch(requests), self.loop)
        self.pending = future
        try:
            return future.result()
        except BaseException as exc:  # the run stops: serve ends, the ServerApp is stopped
            self.failure = exc
            raise

    async def _batch(self, requests: list[NodeRequest]) -> list[NodeReply]:
        replies: dict[int, NodeReply] = {}
        groups: dict[tuple, list[NodeRequest]] = {}
        for request in requests:
            node = self.nodes[request.node_int - 1]
            if node not in self.rounds.active:  # skipped earlier in the run
                replies[request.node_int] = NodeReply(request.node_int, False,
                                                      error="skipped")
                continue
            shapes = tuple((k, tuple(v.shape)) for k, v in request.arrays.items())
            groups.setdefault((request.message_type, shapes), []).append(request)
        for (message_type, _), group in groups.items():
            replies.update(await self._round(message_type, group))
        return [replies[r.node_int] for r in requests]

    def _contract(self, message_type: str, request: NodeRequest) -> Contract:
        privacy = self.rounds.body.privacy
        train = message_type.startswith("train")
        arrays = {k: ArraySpec(shape=list(v.shape), min=-ARRAY_RANGE, max=ARRAY_RANGE)
                  for k, v in request.arrays.items()} if train else {}
        # Under differential privacy the gate withholds a train reply's metrics (no noise
        # covers them); an evaluation's may carry its count only.
        names = self.metrics if privacy is None else [NUM_EXAMPLES]
        metrics = {m: MetricSpec(min=0 if m == NUM_EXAMPLES else -METRIC_RANGE,
                                 max=METRIC_RANGE) for m in names}
        return Contract(arrays=arrays, metrics=metrics,
                        privacy=privacy if train and arrays else None)

    async def _round(self, message_type: str, group: list[NodeRequest]
                     ) -> dict[int, NodeReply]:
        by_node = {self.nodes[r.node_int - 1]: r for r in group}
        contract = self._contract(message_type, group[0])
        names = list(contract.metrics)

        def config(node: str) -> dict[str, Any]:
            request = by_node[node]
            return {**client_config(request, clientapp=self.clientapp,
                                    run_config=self.run_config,
                                    partition=self.nodes.index(node),
                                    partitions=len(self.nodes)), "metrics": names}

        accepted = await self.rounds.send(
            message_type, app="flower", code=self.code, entry="client_step.py",
            contract=contract, config=config, arrays=lambda n: by_node[n].arrays,
            to=list(by_node), hold=True)
        out: dict[int, NodeReply] = {}
        for node, request in by_node.items():
            reply = accepted.get(node)
            if reply is None:
                out[request.node_int] = NodeReply(request.node_int, False,
                                                  error=self._why(node))
                continue
            metrics = dict(reply.metrics)
            metrics.setdefault(NUM_EXAMPLES, float(reply.n or 0))
            out[request.node_int] = NodeReply(request.node_int, True,
                                              arrays=arrays_of(reply), metrics=metrics,
                                              n=reply.n)
        return out

    def _why(self, node: str) -> str:
        """The hub's words for why a node sent nothing this round (the gate's reason)."""
        reply = self.rounds.last.get(node)
        return (reply.reason or reply.state)[:200] if reply else "failed"


def _server_limits(rounds: Rounds, planned: int) -> Limits:
    """The ServerApp's sandbox: the run's limits, its wall clock long enough for every
    round (each node's timeout, with retries) and capped at a day."""
    body = rounds.body
    per_round = body.round_timeout * (1 + (body.retries if body.on_failure == "retry" else 0))
    wall = min(24 * 3600.0, 600.0 + 2 * planned * per_round)
    base = Limits(**body.limits)
    return base.model_copy(update={"wall_seconds": wall,
                                   "scratch_mb": max(base.scratch_mb, 256)})


async def drive_flower(rounds: Rounds) -> None:
    settings = rounds.ctx.settings
    parent = settings.data_dir / "fed-hub"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix=f"{rounds.run_id}-", dir=parent))
    try:
        await _drive(rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _drive(rounds: Rounds, work: Path) -> None:
    body = rounds.body
    app_dir = unpack_app(body.code or "", work / "app")
    serverapp, clientapp, _ = app_components(app_dir)
    spe_settings = app_settings(app_dir)
    run_config = _run_config(app_dir, body.config)
    planned = int(run_config.get("num-server-rounds", 1) or 1)
    await run_in_threadpool(set_airlock, rounds.ctx, rounds.run_id, None, 2 * planned + 1)

    hub_code, scratch, output, empty = (work / d for d in ("hub", "scratch", "output",
                                                           "no-extract"))
    for folder in (scratch, output, empty):
        folder.mkdir()
    shutil.copytree(app_dir, hub_code / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for step in ("steplib.py", "flower/server_step.py", "flower/client_step.py"):
        shutil.copy(APPS / step, hub_code / Path(step).name)
    (hub_code / "_round").mkdir()
    timeout = body.round_timeout * (1 + body.retries) + 60
    (hub_code / "_round" / "round.json").write_text(json.dumps({
        "run": rounds.run_id, "round": 0, "kind": "server", "node": "hub",
        "config": server_config(serverapp=serverapp, run_config=run_config,
                                nodes=len(rounds.active), timeout=timeout)}))

    batches = _Batches(rounds, asyncio.get_running_loop(),
                       code=_packed(app_dir, ("steplib.py", "flower/client_step.py")),
                       clientapp=clientapp, run_config=run_config,
                       metrics=spe_settings["metrics"])
    stop, cancel = threading.Event(), threading.Event()
    limits = _server_limits(rounds, planned)
    done: dict[str, Any] = {}

    def server() -> None:
        try:
            done["result"] = run(hub_code, "server_step.py", empty, output, limits,
                                 scratch_dir=scratch, cancel=cancel,
                                 settings=rounds.ctx.settings)
        finally:
            stop.set()

    thread = threading.Thread(target=server, name=f"flower-{rounds.run_id}", daemon=True)
    thread.start()
    try:
        await asyncio.to_thread(GridHost(range(1, len(batches.nodes) + 1)).serve,
                                scratch, batches.handle, stop_event=stop)
    except GridProtocolError as exc:
        raise RunStopped(f"the ServerApp's messages are not in the grid's format: {exc}"
                         ) from None
    finally:
        if not stop.is_set():  # the run stopped (or was cancelled) before the ServerApp
            cancel.set()
            if batches.pending is not None:
                batches.pending.cancel()
        await asyncio.to_thread(thread.join, 60)
    if batches.failure is not None:
        raise batches.failure
    result = done.get("result")
    if result is not None:
        _operator_log(rounds, result)
    if result is None or result.state != "succeeded":
        why = f"{result.state}" + (f", limit {result.limit}" if result and result.limit
                                   else "") if result else "it did not start"
        raise RunStopped(f"the ServerApp did not finish ({why})")
    model = _model(output / MODEL)
    disclosure = await _disclosure(rounds, app_dir, model, spe_settings)
    await run_in_threadpool(_release, rounds, model, disclosure)


def _operator_log(rounds: Rounds, result: Any) -> None:
    """What the ServerApp printed, for the hub's operator (`<data>/fed-hub/<run>.log`):
    it saw gated updates only, but it is the researcher's code, so its words go to the
    researcher only through the airlock, never with the run."""
    path = rounds.ctx.settings.data_dir / "fed-hub" / f"{rounds.run_id}.log"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as out:
            out.write(f"state {result.state}, exit code {result.exit_code}, limit "
                      f"{result.limit}\n{result.stdout_tail}\n--- stderr ---\n"
                      f"{result.stderr_tail}")
    except OSError:
        log.warning("fed run %s: the ServerApp's log could not be written", rounds.run_id)


def _model(path: Path) -> dict[str, np.ndarray]:
    """The ServerApp's model: an .npz of arrays (no pickles), in the order its keys sort
    (numerically where they are numbers, as an ArrayRecord's "0", "1", ... are)."""
    if not path.is_file() or path.is_symlink():
        raise RunStopped(f"the ServerApp wrote no {MODEL} in /output")
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
    except (OSError, ValueError) as exc:
        raise RunStopped(f"{MODEL} is not an .npz of arrays ({type(exc).__name__})"
                         ) from None
    order = sorted(arrays, key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))
    return {k: arrays[k] for k in order}


async def _disclosure(rounds: Rounds, app_dir: Path, model: dict[str, np.ndarray],
                      spe_settings: dict[str, Any]) -> dict[str, Any]:
    """The model's disclosure report: the disclosure step at every node (no privacy: the
    figures are the report, and the gate would withhold them)."""
    if not spe_settings["task"]:
        return {"check": "membership and attribute inference at each node",
                "verdict": "review", "nodes": {},
                "note": "the app names no hooks ([tool.spe.flower] task): no automatic "
                        "check ran; the checkers review the model unaided"}
    code = _packed(app_dir, ("steplib.py", "disclosure_step.py", "model_risk.py"))
    config: dict[str, Any] = {"task": spe_settings["task"], "array_keys": list(model),
                              "run_config": _run_config(app_dir, rounds.body.config)}
    if spe_settings["attribute"] is not None:
        config["attribute"] = spe_settings["attribute"]
    contract = Contract(metrics={k: MetricSpec(**v)
                                 for k, v in disclosure_step.metric_specs().items()})
    replies = await rounds.send("disclosure", app="flower", code=code,
                                entry="disclosure_step.py", contract=contract,
                                config=config, arrays=model, pool=lambda _r: {},
                                hold=True)
    # Each node's figures, its verdict in words (a 0/1 would read as a count of one).
    nodes = {n: {"patients": r.n, "verdict": "review" if r.metrics.get("review", 1.0)
                 else "pass", **{k: v for k, v in r.metrics.items() if k != "review"}}
             for n, r in sorted(replies.items())}
    review = any(node["verdict"] == "review" for node in nodes.values())
    return {"check": "membership inference (worst case, LiRA) and attribute inference "
                     "at each node, on its training and test records "
                     "(spe/federated/apps/model_risk.py)",
            "verdict": "review" if review else "pass", "nodes": nodes}


def model_json(model: dict[str, np.ndarray]) -> dict[str, Any]:
    """The model as the airlock can read it: each array as nested lists of numbers, by
    key, in the order the app's hooks take them (an .npz is an archive, which the airlock
    blocks as opaque). `np.array(doc["arrays"][key])` gives an array back."""
    return {"format": "the ServerApp's model.npz: each array as nested lists, by key",
            "order": list(model), "arrays": {k: v.tolist() for k, v in model.items()}}


def _release(rounds: Rounds, model: dict[str, np.ndarray], disclosure: dict[str, Any]
             ) -> None:
    with session_scope(rounds.ctx.sessions) as session:
        run = session.get(FedRun, rounds.run_id)
        kept = history(run.rounds, run.privacy)
    request = release(rounds.ctx, run_id=rounds.run_id, pid=rounds.body.permit,
                      requester=rounds.caller.id,
                      files={"model.json": as_json(model_json(model)),
                             "rounds.json": as_json(kept),
                             "disclosure.json": as_json(disclosure)})
    set_airlock(rounds.ctx, rounds.run_id, request)
