"""A Flower ServerApp in the sandbox at the hub (no data, no network), its Grid in files.

Flower's ServerApp talks to its SuperLink over gRPC through a `Grid`; here `FileGrid`
(a `flwr.serverapp.Grid`) hands each batch of messages to the hub's service through the
job's scratch folder, and the hub (spe.federated.flower_host.GridHost) runs the nodes'
rounds and writes the replies back. Runs as /code/server_step.py (steplib.py next to it)
in the analysis environment:

    /code/app/...               the Flower app's folder, on sys.path
    /code/_round/round.json     {"run", "round", "kind", "node", "config"}: config holds
        "serverapp"     "package.module:attr" ([tool.flwr.app.components] serverapp)
        "run_config"    the app's [tool.flwr.app.config], overrides applied
        "nodes"         the run's nodes as the grid's ints, [1, ..., k]
        "timeout"       seconds a send_and_receive waits at most (its own timeout if less)
        "seed"          seeds `random` (the strategies' node sampling), default 0
        "app_dir"       the app's folder under /code ("app")
    /output/...                 what the ServerApp writes (the example: model.npz)

The protocol, in /scratch/grid (the hub reads it as <scratch>/grid):

    request-<seq>.json  {"seq": seq, "messages": [{"node": int, "message_id": str,
                         "message_type": str, "group_id": str, "ttl": float,
                         "arrays_record": name, "array_keys": [key, ...],
                         "config_record": name, "config": {key: value}}]}
    request-<seq>.npz   every message's arrays, named "<node>/<key>"
    reply-<seq>.json    {"seq": seq, "replies": [{"node": int, "ok": bool, "n": int,
                         "metrics": {name: number}, "array_keys": [key, ...],
                         "error": reason}]}  (the hub's words: spe.wire.rounds'
                         GATE_REASONS, never a node's text)
    reply-<seq>.npz     every accepted reply's arrays, named "<node>/<key>"

seq counts from 1; a message goes to one node at most once per request. Each file is
written whole under a temporary name, then renamed (the .npz before the .json, whose
arrival says both are there). The step removes a request's and reply's files once it has
read the reply. A reply that is not `ok` becomes a flwr Message carrying an `Error`
(code CLIENT_APP_CRASHED for a failed step, REPLY_MESSAGE_UNAVAILABLE for a refusal) so
the strategy counts the node as a failure; an accepted one a Message replying to its
request with RecordDict({"arrays": ArrayRecord, "metrics": MetricRecord}) ("arrays" only
when the reply has arrays; "num-examples" is the reply's n when the gate left it out).
ConfigRecord values are numbers, strings, booleans and lists of them (no bytes); a message
holds at most one ArrayRecord and one ConfigRecord.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import steplib
from client_step import SUPERLINK_NODE_ID, StepError, load_component, run_id_of
from flwr.app import (  # the analysis environment's (never the service's venv)
    Array,
    ArrayRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

GRID_DIR = Path(os.environ.get("SPE_GRID_DIR", "/scratch/grid"))
POLL = 0.02
NUM_EXAMPLES = "num-examples"
FAILED_REASON = "step_failed"


def _write_atomic(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "xb") as out:
        out.write(data)
    os.replace(tmp, folder / name)


def _config_value(value: object) -> object:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    raise StepError("a ConfigRecord value is not a number, string, boolean or list of them")


class FileGrid(Grid):
    """A `flwr.serverapp.Grid` whose SuperLink is files in `folder` (see the module)."""

    def __init__(self, folder: Path, nodes: Iterable[int], run: Run,
                 timeout: float | None = None, poll: float = POLL) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.nodes = [int(n) for n in nodes]
        self._run = run
        self.timeout = timeout
        self.poll = poll
        self._seq = 0
        self._pending: dict[str, tuple[int, Message]] = {}  # message id -> (seq, message)
        self._ready: dict[str, Message] = {}  # message id -> its reply, not pulled yet

    # The Grid's interface.
    def set_run(self, run: Run) -> None:
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be an instance of Run, got {type(run).__name__}")
        self._run = run

    @property
    def run(self) -> Run:
        return Run(**vars(self._run))

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        batch = list(messages)
        if not batch:
            return []
        self._seq += 1
        seq = self._seq
        entries, arrays, seen = [], {}, set()
        for message in batch:
            node = message.metadata.dst_node_id
            if node not in self.nodes:
                raise ValueError(f"no node {node} in this run")
            if node in seen:
                raise ValueError("a request sends one message to a node at most")
            seen.add(node)
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            entries.append(self._entry(message, arrays))
            self._pending[message.metadata.message_id] = (seq, message)
        buffer = _npz(arrays)
        _write_atomic(self.folder, f"request-{seq}.npz", buffer)
        _write_atomic(self.folder, f"request-{seq}.json", json.dumps(
            {"seq": seq, "messages": entries}).encode())
        return [m.metadata.message_id for m in batch]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        wanted = set(message_ids)
        for seq in sorted({s for i, (s, _) in self._pending.items() if i in wanted}):
            self._collect(seq)
        return [self._ready.pop(i) for i in list(self._ready) if i in wanted]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        ids = set(self.push_messages(messages))
        limits = [t for t in (timeout, self.timeout) if t is not None]
        end = time.monotonic() + min(limits) if limits else None
        replies: list[Message] = []
        while ids:
            got = list(self.pull_messages(ids))
            replies.extend(got)
            ids.difference_update(m.metadata.reply_to_message_id for m in got)
            if not ids or (end is not None and time.monotonic() >= end):
                break
            time.sleep(self.poll)
        return replies

    # The files.
    def _entry(self, message: Message, arrays: dict[str, np.ndarray]) -> dict:
        content = message.content
        if len(content.array_records) > 1 or len(content.config_records) > 1 \
                or content.metric_records:
            raise ValueError("a message holds one ArrayRecord and one ConfigRecord at most")
        node = message.metadata.dst_node_id
        entry: dict = {"node": node, "message_id": message.metadata.message_id,
                       "message_type": message.metadata.message_type,
                       "group_id": message.metadata.group_id,
                       "ttl": message.metadata.ttl, "array_keys": [], "config": {}}
        for name, record in content.array_records.items():
            entry["arrays_record"] = name
            for key, array in record.items():
                entry["array_keys"].append(key)
                arrays[f"{node}/{key}"] = array.numpy()
        for name, record in content.config_records.items():
            entry["config_record"] = name
            entry["config"] = {k: _config_value(v) for k, v in record.items()}
        return entry

    def _collect(self, seq: int) -> None:
        """Turn reply-<seq> into replies, once it is there."""
        reply_json = self.folder / f"reply-{seq}.json"
        if not reply_json.exists():
            return
        body = json.loads(reply_json.read_text())
        npz_path = self.folder / f"reply-{seq}.npz"
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
        by_node = {int(r["node"]): r for r in body.get("replies", [])}
        for message_id, (s, request) in list(self._pending.items()):
            if s != seq:
                continue
            del self._pending[message_id]
            reply = by_node.get(request.metadata.dst_node_id)
            self._ready[message_id] = _reply_message(request, reply, arrays)
        for name in (f"request-{seq}.json", f"request-{seq}.npz", f"reply-{seq}.npz",
                     f"reply-{seq}.json"):
            (self.folder / name).unlink(missing_ok=True)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _reply_message(request: Message, reply: dict | None,
                   arrays: dict[str, np.ndarray]) -> Message:
    if reply is None or not reply.get("ok"):
        reason = (reply or {}).get("error") or "no reply"
        code = (ErrorCode.CLIENT_APP_CRASHED if reason == FAILED_REASON
                else ErrorCode.REPLY_MESSAGE_UNAVAILABLE)
        message = Message(Error(code=code, reason=str(reason)), reply_to=request)
    else:
        node = request.metadata.dst_node_id
        metrics = {k: float(v) for k, v in reply.get("metrics", {}).items()}
        metrics.setdefault(NUM_EXAMPLES, int(reply["n"]))
        records: dict = {}
        keys = reply.get("array_keys", [])
        if keys:
            records["arrays"] = ArrayRecord({k: Array(arrays[f"{node}/{k}"]) for k in keys})
        records["metrics"] = MetricRecord(metrics)
        message = Message(RecordDict(records), reply_to=request)
    message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
    return message


def main() -> int:
    meta, _ = steplib.read_round()
    config = meta["config"]
    app = load_component(config["serverapp"], steplib.CODE / config.get("app_dir", "app"))
    run_id = int(config.get("run_id", run_id_of(meta.get("run", ""))))
    run_config = dict(config.get("run_config", {}))
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    run = Run.create_empty(run_id)
    run.override_config = run_config
    grid = FileGrid(GRID_DIR, config["nodes"], run, timeout=config.get("timeout"))
    context = Context(run_id=run_id, node_id=SUPERLINK_NODE_ID, node_config={},
                      state=RecordDict(), run_config=run_config)
    random.seed(int(config.get("seed", 0)))
    app(grid, context)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StepError as exc:
        print(f"server_step: {exc}", file=sys.stderr)
        sys.exit(2)
