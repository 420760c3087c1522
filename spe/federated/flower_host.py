"""The hub's side of a Flower app's Grid: the files a ServerApp in the sandbox writes, and
the replies the hub writes back (spe/federated/apps/flower/server_step.py is the other side).

Flower's ServerApp reaches its nodes through a SuperLink over gRPC; the SPE runs the
ServerApp in a sandbox at the hub without network, and its `FileGrid` writes each batch of
messages into the job's scratch folder. `GridHost.serve` reads them here, hands each batch
to `handle` (which sends every node its round, spe.wire.rounds, and gates what comes back)
and writes the answers. No flwr here: numpy and spe.wire.rounds only.

In <scratch>/grid (the sandbox's /scratch/grid), seq counting from 1:

    request-<seq>.json  {"seq": seq, "messages": [{"node": int, "message_id": str,
                         "message_type": "train" | "evaluate" | "<category>.<action>",
                         "group_id": str, "ttl": float, "arrays_record": name,
                         "array_keys": [key, ...], "config_record": name,
                         "config": {key: number | string | bool | list of them}}]}
    request-<seq>.npz   every message's arrays, named "<node>/<key>" (an .npz, no pickles)
    reply-<seq>.json    {"seq": seq, "replies": [{"node": int, "ok": bool, "n": int | null,
                         "metrics": {name: number}, "array_keys": [key, ...],
                         "error": reason}]}: one reply for each message's node
    reply-<seq>.npz     the accepted replies' arrays, named "<node>/<key>"

Each side writes a file whole under a temporary name and renames it (the .npz first; the
.json's arrival says both are there). The sandbox removes a request's and its reply's files
once it has read the reply. `error` is the hub's word for a node that did not send an
update (a key of spe.wire.rounds.GATE_REASONS: "step_failed", a refusal's reason), never
anything a node's step wrote.

What the sandbox writes is untrusted: the grid folder and each file are opened without
following symlinks (O_NOFOLLOW, by the folder's descriptor), must be regular files, and are
capped in size; the arrays are read by spe.wire.rounds.unpack_arrays (never unpickled) after
checking that the .npz is stored, not compressed, and its members' sizes add up within the
cap; a message naming an unknown node, a node twice, an unknown record or value type, or an
array the request does not hold is a `GridProtocolError`, which ends `serve` (the run's
orchestrator then stops the ServerApp's job).
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import stat
import threading
import tomllib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spe.wire.rounds import MAX_ARRAYS_BYTES, BadArrays, unpack_arrays

GRID = "grid"
MAX_JSON_BYTES = 4 * 1024 * 1024
MESSAGE_TYPE = re.compile(r"^(train|evaluate|query)(\.[A-Za-z_][A-Za-z0-9_]{0,63})?$")
KEY = re.compile(r"^[^\x00-\x1f/]{1,128}$")


class GridProtocolError(Exception):
    """The ServerApp's files are not in the grid's format; the message names no value."""


@dataclass
class NodeRequest:
    """One message of the ServerApp's: what node `node_int` is to run."""
    node_int: int
    message_type: str
    arrays: dict[str, np.ndarray]  # by key, in the ArrayRecord's order
    config: dict[str, Any]  # the message's ConfigRecord
    message_id: str = ""
    group_id: str = ""
    arrays_record: str = "arrays"
    config_record: str = "config"

    @property
    def array_keys(self) -> list[str]:
        return list(self.arrays)


@dataclass
class NodeReply:
    """A node's answer: its gated update (`ok`), or the hub's word why there is none."""
    node_int: int
    ok: bool
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    n: int | None = None
    error: str = ""  # a key of spe.wire.rounds.GATE_REASONS when not ok


Handle = Callable[[int, list[NodeRequest]], list[NodeReply]]


def app_components(app_dir: Path) -> tuple[str, str, dict[str, Any]]:
    """(serverapp, clientapp, run config) of a Flower app's pyproject.toml."""
    data = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text())
    app = data.get("tool", {}).get("flwr", {}).get("app", {})
    components = app.get("components", {})
    server, client = components.get("serverapp"), components.get("clientapp")
    if not isinstance(server, str) or not isinstance(client, str):
        raise ValueError("pyproject.toml names no [tool.flwr.app.components] serverapp "
                         "and clientapp")
    return server, client, dict(app.get("config", {}))


def client_config(request: NodeRequest, *, clientapp: str, run_config: dict[str, Any],
                  partition: int, partitions: int, app_dir: str = "app") -> dict[str, Any]:
    """The config of a node's round (round.json's "config") for client_step.py."""
    return {"clientapp": clientapp, "message_type": request.message_type,
            "run_config": dict(run_config),
            "node_config": {"partition-id": partition, "num-partitions": partitions},
            "node_id": request.node_int, "array_keys": request.array_keys,
            "message_config": dict(request.config), "group_id": request.group_id,
            "arrays_record": request.arrays_record, "config_record": request.config_record,
            "app_dir": app_dir}


def server_config(*, serverapp: str, run_config: dict[str, Any], nodes: int,
                  timeout: float | None = None, seed: int = 0, app_dir: str = "app"
                  ) -> dict[str, Any]:
    """The config of the ServerApp's job (round.json's "config") for server_step.py."""
    return {"serverapp": serverapp, "run_config": dict(run_config),
            "nodes": list(range(1, nodes + 1)), "timeout": timeout, "seed": seed,
            "app_dir": app_dir}


class GridHost:
    """Serves a FileGrid's requests (see the module) for the nodes `1..nodes`."""

    def __init__(self, nodes: Iterable[int], *, max_bytes: int = MAX_ARRAYS_BYTES) -> None:
        self.nodes = {int(n) for n in nodes}
        self.max_bytes = max_bytes
        self.served = 0

    def serve(self, scratch_dir: Path | str, handle: Handle, *, stop_event: threading.Event,
              poll: float = 0.02) -> int:
        """Answer requests in order until `stop_event` is set; the number answered."""
        folder = Path(scratch_dir) / GRID
        dir_fd: int | None = None
        seq = 1
        try:
            while not stop_event.is_set():
                if dir_fd is None:
                    dir_fd = _open_dir(folder)
                if dir_fd is None or not _exists(dir_fd, f"request-{seq}.json"):
                    stop_event.wait(poll)
                    continue
                requests = self.read_request(dir_fd, seq)
                replies = handle(seq, requests)
                self.write_reply(dir_fd, seq, requests, replies)
                self.served += 1
                seq += 1
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        return self.served

    def read_request(self, dir_fd: int, seq: int) -> list[NodeRequest]:
        try:
            body = json.loads(_read(dir_fd, f"request-{seq}.json", MAX_JSON_BYTES))
        except ValueError:
            raise GridProtocolError(f"request {seq} is not JSON") from None
        if not isinstance(body, dict) or body.get("seq") != seq \
                or not isinstance(body.get("messages"), list):
            raise GridProtocolError(f"request {seq} is not in the grid's format")
        try:
            arrays = _unpack(_read(dir_fd, f"request-{seq}.npz", self.max_bytes),
                             self.max_bytes)
        except BadArrays as exc:
            raise GridProtocolError(f"request {seq}'s arrays: {exc}") from None
        requests, seen, used = [], set(), set()
        for entry in body["messages"]:
            request = self._request(seq, entry, arrays)
            if request.node_int in seen:
                raise GridProtocolError(f"request {seq} names a node twice")
            seen.add(request.node_int)
            used.update(f"{request.node_int}/{k}" for k in request.arrays)
            requests.append(request)
        if used != set(arrays):
            raise GridProtocolError(f"request {seq} holds arrays no message names")
        return requests

    def _request(self, seq: int, entry: Any, arrays: dict[str, np.ndarray]) -> NodeRequest:
        bad = GridProtocolError(f"a message of request {seq} is not in the grid's format")
        if not isinstance(entry, dict):
            raise bad
        node = entry.get("node")
        if isinstance(node, bool) or not isinstance(node, int) or node not in self.nodes:
            raise GridProtocolError(f"a message of request {seq} names no node of the run")
        message_type = entry.get("message_type")
        if not isinstance(message_type, str) or not MESSAGE_TYPE.match(message_type):
            raise bad
        keys = entry.get("array_keys", [])
        config = entry.get("config", {})
        if not isinstance(keys, list) or len(set(map(str, keys))) != len(keys) \
                or not all(isinstance(k, str) and KEY.match(k) for k in keys) \
                or not isinstance(config, dict) \
                or not all(isinstance(k, str) and KEY.match(k) and _config_value(v)
                           for k, v in config.items()):
            raise bad
        names = [entry.get(k, d) for k, d in (("arrays_record", "arrays"),
                                              ("config_record", "config"),
                                              ("message_id", ""), ("group_id", ""))]
        if not all(isinstance(s, str) and len(s) <= 128 for s in names):
            raise bad
        try:
            node_arrays = {k: arrays[f"{node}/{k}"] for k in keys}
        except KeyError:
            raise GridProtocolError(f"request {seq} lacks an array a message names") from None
        return NodeRequest(node_int=node, message_type=message_type, arrays=node_arrays,
                           config=config, arrays_record=names[0], config_record=names[1],
                           message_id=names[2], group_id=names[3])

    def write_reply(self, dir_fd: int, seq: int, requests: list[NodeRequest],
                    replies: list[NodeReply]) -> None:
        by_node = {r.node_int: r for r in replies}
        entries, arrays = [], {}
        for request in requests:
            reply = by_node.get(request.node_int) or NodeReply(
                request.node_int, False, error="node_error")
            entry = {"node": reply.node_int, "ok": bool(reply.ok), "n": None,
                     "metrics": {}, "array_keys": [], "error": reply.error}
            if reply.ok:
                entry["n"] = int(reply.n or 0)
                entry["metrics"] = {k: float(v) for k, v in reply.metrics.items()}
                entry["array_keys"] = list(reply.arrays)
                for key, value in reply.arrays.items():
                    arrays[f"{reply.node_int}/{key}"] = np.asarray(value)
            entries.append(entry)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        _write(dir_fd, f"reply-{seq}.npz", buffer.getvalue())
        _write(dir_fd, f"reply-{seq}.json", json.dumps(
            {"seq": seq, "replies": entries}).encode())


def _config_value(value: Any) -> bool:
    """Whether a ConfigRecord value can travel (True; a scalar or a list of scalars)."""
    def scalar(v: Any) -> bool:
        return isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))
    return scalar(value) or (isinstance(value, list) and all(scalar(v) for v in value))


def _open_dir(folder: Path) -> int | None:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise GridProtocolError("the grid folder is not a folder") from None
        raise


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _read(dir_fd: int, name: str, cap: int) -> bytes:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        raise GridProtocolError(f"{name} cannot be opened (missing, or a link)") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise GridProtocolError(f"{name} is not a file")
        if info.st_size > cap:
            raise GridProtocolError(f"{name} is over the size limit")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise GridProtocolError(f"{name} is over the size limit")
    return data


def _unpack(raw: bytes, cap: int) -> dict[str, np.ndarray]:
    """The arrays of an .npz the sandbox wrote (spe.wire.rounds.unpack_arrays: stored, not
    compressed, its members within `cap` in all, so a compressed bomb is never inflated)."""
    return unpack_arrays(raw, max_bytes=cap)


def _write(dir_fd: int, name: str, data: bytes) -> None:
    """`name` in the grid folder, whole: a new file of a fresh name (never through a link
    the sandbox planted), readable by the job, renamed over `name`."""
    tmp = f".{name}.{uuid.uuid4().hex}.host"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), 0o644)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
