"""The node gate: what a round's step wrote in the sandbox, checked outside it before
anything leaves the node (spe.wire.rounds).

`check(output_dir, contract, ...)` reads the step's output folder as hostile: only
`update.json`, `arrays.npz` and (with a contract that says `keep`) a `keep/` folder may be
there, none of them links; the update must name exactly the contract's arrays, with their
shapes, finite values in range, only metrics it declares, and a count of patients that the
node's policy accepts (at least its minimum, at most what the extract holds). With a
privacy setting, the arrays (their change from the round's input) are clipped to the
contract's norm together and Gaussian noise is added; metrics are withheld then, since no
noise covers them. The result names one of `spe.wire.rounds.GATE_REASONS` when it
refuses: the gate's words, never the step's.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spe.wire.rounds import (
    KEEP_DIR,
    MAX_ARRAYS_BYTES,
    UPDATE_ARRAYS,
    UPDATE_FILE,
    BadArrays,
    Contract,
    unpack_arrays,
)

MAX_UPDATE_JSON = 64 * 1024
MAX_KEEP_BYTES = 512 * 1024 * 1024
MAX_KEEP_FILES = 1000


@dataclass
class GateResult:
    allow: bool
    reason: str = ""  # a key of GATE_REASONS when refused
    n: int | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    keep: list[Path] = field(default_factory=list)  # regular files under output/keep
    clipped: bool = False  # the update was scaled down to the clip norm
    detail: str = ""  # for the node's audit: which name or shape, never a value

    @classmethod
    def refuse(cls, reason: str, detail: str = "") -> GateResult:
        return cls(False, reason, detail=detail)


def _regular(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file (not a link), at most `limit` of them; None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def _keep_files(folder: Path) -> list[Path] | None:
    """The regular files under `folder` (no links, no special files), or None."""
    found: list[Path] = []
    total = 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                return None
        for name in files:
            path = Path(root, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                return None
            total += st.st_size
            found.append(path)
    if len(found) > MAX_KEEP_FILES or total > MAX_KEEP_BYTES:
        return None
    return sorted(found)


def _numbers(name: str, value: np.ndarray) -> np.ndarray | None:
    if value.dtype.kind not in "biuf":  # strings, objects, complex: not an update
        return None
    return value.astype(np.float64)


def check(output_dir: Path, contract: Contract, *, min_patients: int,
          extract_patients: int | None) -> GateResult:
    """The update in `output_dir` against `contract` and the count rules (no privacy)."""
    allowed = {UPDATE_FILE, UPDATE_ARRAYS} | ({KEEP_DIR} if contract.keep else set())
    entries = {e.name: e for e in os.scandir(output_dir)}
    extra = sorted(set(entries) - allowed)
    if extra:
        return GateResult.refuse("extra_files", f"{len(extra)} unexpected entries")
    if UPDATE_FILE not in entries:
        return GateResult.refuse("no_update")
    raw = _regular(output_dir / UPDATE_FILE, MAX_UPDATE_JSON)
    if raw is None:
        return GateResult.refuse("bad_update", "update.json is not a small regular file")
    try:
        update = json.loads(raw)
    except ValueError:
        return GateResult.refuse("bad_update", "update.json is not JSON")
    if not isinstance(update, dict) or set(update) - {"n", "metrics"}:
        return GateResult.refuse("bad_update", "update.json has other keys")
    n, metrics = update.get("n"), update.get("metrics") or {}
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return GateResult.refuse("bad_update", "n is not a count")
    if not isinstance(metrics, dict):
        return GateResult.refuse("bad_update", "metrics is not an object")
    if set(metrics) - set(contract.metrics):
        return GateResult.refuse("names", "undeclared metrics")
    shown: dict[str, float] = {}
    for name, value in metrics.items():
        spec = contract.metrics[name]
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value) or not spec.min <= value <= spec.max):
            return GateResult.refuse("values", f"metric {name}")
        shown[name] = float(value)
    arrays: dict[str, np.ndarray] = {}
    if contract.arrays:
        if UPDATE_ARRAYS not in entries:
            return GateResult.refuse("names", "no arrays")
        data = _regular(output_dir / UPDATE_ARRAYS, MAX_ARRAYS_BYTES)
        if data is None:
            return GateResult.refuse("bad_update", "arrays.npz is not a regular file")
        try:
            arrays = unpack_arrays(data)
        except BadArrays as exc:
            return GateResult.refuse("bad_update", str(exc))
    elif UPDATE_ARRAYS in entries:
        return GateResult.refuse("names", "arrays where the contract has none")
    if set(arrays) != set(contract.arrays):
        return GateResult.refuse("names", "array names differ from the contract's")
    checked: dict[str, np.ndarray] = {}
    for name, spec in contract.arrays.items():
        value = arrays[name]
        if list(value.shape) != list(spec.shape):
            return GateResult.refuse("shape", f"array {name}: {list(value.shape)}")
        numbers = _numbers(name, value)
        if numbers is None or not np.all(np.isfinite(numbers)) or (
                numbers.size and (numbers.min() < spec.min or numbers.max() > spec.max)):
            return GateResult.refuse("values", f"array {name}")
        checked[name] = numbers
    keep: list[Path] = []
    if contract.keep and KEEP_DIR in entries:
        if not entries[KEEP_DIR].is_dir(follow_symlinks=False):
            return GateResult.refuse("extra_files", "keep is not a folder")
        found = _keep_files(output_dir / KEEP_DIR)
        if found is None:
            return GateResult.refuse("extra_files", "keep holds links or too much")
        keep = found
    if n < min_patients:
        return GateResult.refuse("min_patients", f"n below the minimum of {min_patients}")
    if extract_patients is not None and n > extract_patients:
        return GateResult.refuse("count", "n above the extract's patients")
    return GateResult(True, n=n, arrays=checked, metrics=shown, keep=keep)


def add_noise(result: GateResult, contract: Contract, inputs: dict[str, np.ndarray],
              rng: np.random.Generator) -> GateResult:
    """The Gaussian mechanism of `contract.privacy` over the update's arrays: the change
    from `inputs` (relative) or the arrays themselves, clipped to the L2 norm `clip` over
    all arrays together, plus N(0, (noise_multiplier * clip)^2) on every value. Metrics
    are withheld (nothing covers them); values are not clamped to the contract's range
    afterwards, so the noise stays unbiased."""
    privacy = contract.privacy
    if privacy is None or not result.allow:
        raise ValueError("noise is for an allowed update under a privacy setting")
    names = sorted(result.arrays)
    base = {k: (inputs[k] if privacy.relative and k in inputs
                and inputs[k].shape == result.arrays[k].shape else 0.0) for k in names}
    change = {k: result.arrays[k] - base[k] for k in names}
    norm = math.sqrt(sum(float(np.sum(v * v)) for v in change.values()))
    scale = min(1.0, privacy.clip / norm) if norm > 0 else 1.0
    sd = privacy.noise_multiplier * privacy.clip
    noised = {k: base[k] + change[k] * scale + rng.normal(0.0, sd, change[k].shape)
              for k in names}
    return GateResult(True, n=result.n, arrays=noised, metrics={}, keep=result.keep,
                      clipped=scale < 1.0, detail=result.detail)
