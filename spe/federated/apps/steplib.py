"""Read a round's input and write its update, inside the sandbox (spe.wire.rounds).
Copied next to each app's step; imports numpy only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

CODE = Path(os.environ.get("SPE_STEP_CODE", "/code"))
EXTRACT = Path(os.environ.get("SPE_STEP_EXTRACT", "/extract"))
OUTPUT = Path(os.environ.get("SPE_STEP_OUTPUT", "/output"))


def read_round() -> tuple[dict, dict[str, np.ndarray]]:
    """(round.json, the input arrays) of this round."""
    folder = CODE / "_round"
    meta = json.loads((folder / "round.json").read_text())
    arrays: dict[str, np.ndarray] = {}
    if (folder / "arrays.npz").exists():
        with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
    return meta, arrays


def write_update(arrays: dict[str, np.ndarray], n: int,
                 metrics: dict[str, float] | None = None) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    if arrays:  # an update of metrics only has no arrays file (the gate refuses an empty one)
        np.savez(OUTPUT / "arrays.npz",
                 **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
    (OUTPUT / "update.json").write_text(json.dumps(
        {"n": int(n), "metrics": {k: float(v) for k, v in (metrics or {}).items()}}))


def keep_dir() -> Path:
    """Where files that stay at the node go (with a contract that says `keep`)."""
    path = OUTPUT / "keep"
    path.mkdir(parents=True, exist_ok=True)
    return path
