"""One Flower ClientApp call as a round's step, in the sandbox at a node (no network).

Flower runs a ClientApp in a process its SuperNode feeds over gRPC; here the node's round
(spe.wire.rounds) is that feed, in files. This step, with steplib.py copied next to it,
runs as /code/client_step.py in the analysis environment (which holds flwr):

    /code/app/...               the Flower app's folder (its pyproject.toml's folder); on
                                sys.path, so "package.module:attr" imports from it
    /code/_round/round.json     {"run", "round", "kind", "node", "config"}: config holds
        "clientapp"       "package.module:attr" ([tool.flwr.app.components] clientapp)
        "message_type"    "train" | "evaluate" (or "<category>.<action>")
        "run_config"      the app's [tool.flwr.app.config], overrides applied
        "node_config"     {"partition-id": i, "num-partitions": k}
        "array_keys"      the ordered keys of the message's ArrayRecord
        "message_config"  the message's ConfigRecord (server-round, lr, ...), optional
        "node_id"         the node's int in the run's grid (1..k), optional
        "group_id"        the message's group (the server's round), optional
        "arrays_record", "config_record"   the message's record names ("arrays", "config")
        "app_dir"         the app's folder under /code ("app")
        "metrics"         optional: the metrics the round's contract declares; the
                          reply's others are left out (the gate refuses undeclared ones)
    /code/_round/arrays.npz     the message's ArrayRecord's arrays, by key

It builds the flwr `Message` the SuperNode would have delivered (its `Metadata` from the
SuperLink, node 1, to this node) and the node's `Context`, calls the researcher's
`ClientApp(message, context)` unchanged, and writes its reply as the round's update:

    /output/arrays.npz          the reply's ArrayRecord, every key as the app wrote it (a
                                key or shape the contract does not name fails the gate)
    /output/update.json         {"n": the reply's "num-examples", "metrics": its
                                MetricRecord (numbers only; "num-examples" included)}

An error (the app raised, replied with an Error, a reply not of this form) exits non-zero
and writes nothing: the node reports "step_failed". Only the error's class name and this
step's own words reach stderr, never a value of the data.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
import sys
import time
import uuid
from pathlib import Path

import steplib

COMPONENT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
NUM_EXAMPLES = "num-examples"
SUPERLINK_NODE_ID = 1  # flwr.common.constant.SUPERLINK_NODE_ID: the sender of instructions


class StepError(Exception):
    """A reply or round not in this step's format; its message names no data."""


def load_component(spec: str, app_dir: Path) -> object:
    """The object `spec` ("package.module:attr") names, imported from the app's folder."""
    if not isinstance(spec, str) or not COMPONENT.match(spec):
        raise StepError("the component is not 'package.module:attr'")
    module_name, attr = spec.split(":")
    sys.path.insert(0, str(app_dir))
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def run_id_of(run: object) -> int:
    """The flwr run id (int) of an SPE run's name, stable across rounds and nodes."""
    return int.from_bytes(hashlib.sha256(str(run).encode()).digest()[:7], "big")


def build(meta: dict, arrays: dict) -> tuple[object, object]:
    """(the flwr Message, the Context) of this round."""
    from flwr.app import (
        DEFAULT_TTL,
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        Metadata,
        RecordDict,
    )
    from flwr.supercore.task_identity import TaskIdentity

    config = meta["config"]
    keys = list(config.get("array_keys", []))
    if len(set(keys)) != len(keys) or set(keys) != set(arrays):
        raise StepError("the round's arrays are not the ArrayRecord's keys")
    run_id = int(config.get("run_id", run_id_of(meta.get("run", ""))))
    node_id = int(config.get("node_id", int(config.get("node_config", {})
                                                  .get("partition-id", 0)) + 1))
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    content = RecordDict({
        config.get("arrays_record", "arrays"):
            ArrayRecord({k: Array(arrays[k]) for k in keys}),
        config.get("config_record", "config"):
            ConfigRecord(dict(config.get("message_config", {}))),
    })
    metadata = Metadata(
        run_id=run_id,
        message_id=uuid.uuid4().hex,
        src_node_id=SUPERLINK_NODE_ID,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id=str(config.get("group_id", meta.get("round", ""))),
        created_at=time.time(),
        ttl=DEFAULT_TTL,
        message_type=config["message_type"],
    )
    message = Message(content=content, metadata=metadata)
    context = Context(run_id=run_id, node_id=node_id,
                      node_config=dict(config.get("node_config", {})),
                      state=RecordDict(), run_config=dict(config.get("run_config", {})))
    return message, context


def update_of(reply: object, message: object) -> tuple[dict, int, dict]:
    """(arrays, n, metrics) of the ClientApp's reply."""
    from flwr.app import Message

    if not isinstance(reply, Message):
        raise StepError("the ClientApp returned no Message")
    if reply.has_error():
        raise StepError(f"the ClientApp replied with an error (code {reply.error.code})")
    content = reply.content
    array_records = list(content.array_records.values())
    metric_records = list(content.metric_records.values())
    if len(array_records) > 1:
        raise StepError("the reply holds more than one ArrayRecord")
    if len(metric_records) != 1:
        raise StepError("the reply holds no MetricRecord, or more than one")
    if message.metadata.message_type.startswith("train") and not array_records:
        raise StepError("a train reply holds no ArrayRecord")
    arrays = {k: a.numpy() for k, a in array_records[0].items()} if array_records else {}
    metrics: dict[str, float] = {}
    for name, value in metric_records[0].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StepError("a metric of the reply is not a number")
        metrics[name] = float(value)
    count = metric_records[0].get(NUM_EXAMPLES)
    if isinstance(count, bool) or not isinstance(count, (int, float)) \
            or not math.isfinite(count) or count != int(count) or count < 0:
        raise StepError(f"the reply's MetricRecord has no whole '{NUM_EXAMPLES}'")
    return arrays, int(count), metrics


def main() -> int:
    meta, arrays = steplib.read_round()
    config = meta["config"]
    app = load_component(config["clientapp"], steplib.CODE / config.get("app_dir", "app"))
    message, context = build(meta, arrays)
    reply = app(message, context)
    out_arrays, n, metrics = update_of(reply, message)
    declared = config.get("metrics")
    if isinstance(declared, list):  # the round's contract: a metric it does not name stays
        metrics = {k: v for k, v in metrics.items() if k in declared}
    steplib.write_update(out_arrays, n, metrics)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StepError as exc:
        print(f"client_step: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # the app's own: its class only, its words may hold data
        print(f"client_step: the ClientApp failed ({type(exc).__name__})", file=sys.stderr)
        sys.exit(1)
