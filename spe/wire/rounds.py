"""The wire of a federated computation's rounds (hub <-> node), and the files a round's
step reads and writes inside the sandbox. Both sides read this module; neither imports
the other.

A federated computation (a ComBat harmonisation, a Flower app) is a sequence of rounds
under a permit. In each round the hub sends every node of the run a `RoundRequest` at
`POST /api/v1/fed/rounds` (mutual TLS and the hub's signed context, whose `qh` is the
SHA-256 of the request's `digest()`); the node stages the permit's extract (cached), runs
the round's step in the sandbox (no network, as for jobs) and passes what it wrote through
its gate (`spe.federated.gate`: the round's `Contract`, the policy's minimum patients, the
permit's privacy settings) before anything leaves. It answers a `RoundReply`: the gated
update, or a refusal in the gate's own words (`GATE_REASONS`), never the step's text.

What the step sees (its view of the sandbox):

    /code/...                   the app's code
    /code/_round/round.json     {"run", "round", "kind", "node", "config"}  (`ROUND_FILE`)
    /code/_round/arrays.npz     the round's input arrays (global parameters, pooled
                                estimates); absent when the round has none (`INPUT_ARRAYS`)
    /extract/...                the permit's staged extract, as for jobs
    /output/update.json         {"n": patients behind the update, "metrics": {name: number}}
    /output/arrays.npz          the update's arrays (numpy .npz, no pickled objects)
    /output/keep/...            files that stay at the node (the harmonised features),
                                only when the contract says `keep`; never sent

Anything else the step leaves in /output fails the gate, and so does a name, shape,
value or count the contract does not allow. Arrays travel as base64 of an .npz.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import zipfile
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from spe.sandbox.limits import RequestedLimits

ROUNDS_PATH = "/api/v1/fed/rounds"

ROUND_DIR = "_round"
ROUND_FILE = "round.json"
INPUT_ARRAYS = "arrays.npz"
UPDATE_FILE = "update.json"
UPDATE_ARRAYS = "arrays.npz"
KEEP_DIR = "keep"

MiB = 1024 * 1024
#: An update's arrays, packed: either side refuses more.
MAX_ARRAYS_BYTES = 64 * MiB
MAX_ARRAYS_B64 = 4 * -(-MAX_ARRAYS_BYTES // 3)
MAX_METRICS = 32
MAX_ARRAYS = 256
MAX_CONFIG_KEYS = 64
#: The name of an array, a metric or a config entry.
Name = Annotated[str, Field(min_length=1, max_length=128)]
#: An app's settings for a run or a round (ComBat's covariates, a Flower app's run config).
RunConfig = Annotated[dict[Name, Any], Field(max_length=MAX_CONFIG_KEYS)]

# What the hub may learn of a node's round: the gate's words, never the step's.
ACCEPTED = "accepted"
REFUSED = "refused"  # the gate or the node's policy refused what the step wrote
FAILED = "failed"  # the step did not finish (exit, limit, staging); nothing was sent
NodeRoundState = Literal["accepted", "refused", "failed"]

GATE_REASONS = {
    "extra_files": "the step wrote files its round's contract does not name",
    "no_update": "the step wrote no update",
    "bad_update": "the step's update is not in the round's format",
    "names": "the step's update names arrays or metrics its round's contract does not",
    "shape": "an array of the step's update has a shape its round's contract does not allow",
    "values": "a value of the step's update is not a finite number in its contract's range",
    "min_patients": "fewer patients stand behind the update than the node's policy requires",
    "count": "the update claims more patients than the extract holds",
    "budget": "the permit's privacy budget does not cover this round",
    "policy": "the node's policy refused this round",
    "step_failed": "the step exited with an error",
    "step_limit": "the step hit a limit of the sandbox",
    "staging": "the permit's extract could not be staged",
    "node_error": "the node could not run the step",
}


class ArraySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shape: list[Annotated[int, Field(ge=0, le=10_000_000)]] = Field(max_length=8)
    min: float = -1e12
    max: float = 1e12


class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: float = -1e12
    max: float = 1e12


class PrivacySpec(BaseModel):
    """The Gaussian mechanism the gate applies to every array of an update: the update's
    change from the round's input (`relative`, as a model update) or the arrays themselves
    are clipped to L2 norm `clip` together, then noise N(0, (noise_multiplier * clip)^2)
    is added to each value. The spend is counted per round (`spe.federated.privacy`)."""
    model_config = ConfigDict(extra="forbid")
    clip: float = Field(gt=0, le=1e6)
    noise_multiplier: float = Field(gt=0, le=1e3)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    relative: bool = True


class Contract(BaseModel):
    """What a round's step may send: exactly these arrays and metrics (a metric may be
    left out), a count of patients, and with `keep` files that stay at the node."""
    model_config = ConfigDict(extra="forbid")
    arrays: dict[Name, ArraySpec] = Field(default_factory=dict, max_length=MAX_ARRAYS)
    metrics: dict[Name, MetricSpec] = Field(default_factory=dict, max_length=MAX_METRICS)
    keep: bool = False
    privacy: PrivacySpec | None = None


class RoundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field(min_length=1, max_length=64)
    round: int = Field(ge=0, le=100_000)
    kind: str = Field(min_length=1, max_length=64)  # the step's name, e.g. "moments"
    app: Literal["combat", "flower"]
    code: str = Field(min_length=4, max_length=4 * -(-50 * MiB // 3))  # base64 tar.gz
    entry: str = Field(default="step.py", min_length=1, max_length=255)
    config: RunConfig = Field(default_factory=dict)
    arrays: str | None = Field(default=None, max_length=MAX_ARRAYS_B64)  # base64 .npz
    contract: Contract
    limits: RequestedLimits = Field(default_factory=dict)

    def digest(self) -> str:
        """What the hub's signed context names (`qh`): the whole request, canonical."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True,
                                         separators=(",", ":")).encode()).hexdigest()


class RoundReply(BaseModel):
    node: str
    state: NodeRoundState
    reason: str = ""  # a value of GATE_REASONS, or empty when accepted
    n: int | None = None  # patients behind the update, when accepted
    arrays: str | None = None  # base64 .npz of the gated arrays
    metrics: dict[str, float] = Field(default_factory=dict)
    # The privacy this round spent at the node (epsilon at the contract's delta, and the
    # mechanism's figures), when the contract asks for it.
    privacy: dict[str, float] | None = None
    seconds: float = 0.0  # the step's time in the sandbox


def pack_arrays(arrays: dict[str, np.ndarray]) -> str:
    """base64 of an .npz of `arrays` (float64, no pickles)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
    return base64.b64encode(buffer.getvalue()).decode()


class BadArrays(ValueError):
    pass


def unpack_arrays(data: str | bytes, *, max_bytes: int = MAX_ARRAYS_BYTES
                  ) -> dict[str, np.ndarray]:
    """The arrays of base64 (str) or raw (bytes) .npz data; never unpickles. The .npz must
    be stored, not compressed (np.savez), with its members' sizes within `max_bytes` in
    all: what a step wrote is untrusted, and a small compressed member can inflate to any
    size when read."""
    try:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else data
    except (binascii.Error, ValueError):
        raise BadArrays("the arrays are not base64") from None
    if len(raw) > max_bytes:
        raise BadArrays("the arrays are over the size limit")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise BadArrays("the arrays are not an .npz") from None
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        raise BadArrays("the arrays are compressed: write them with np.savez")
    if sum(i.file_size for i in infos) > max_bytes:
        raise BadArrays("the arrays are over the size limit")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            if len(npz.files) > MAX_ARRAYS:
                raise BadArrays("too many arrays")
            return {name: np.array(npz[name]) for name in npz.files}
    except BadArrays:
        raise
    except Exception:  # a zip or .npy header of any shape: not an update
        raise BadArrays("the arrays are not an .npz of numbers") from None
