"""Consistent perturbation of the statistics tier: the cell-key method (as the Australian
Bureau of Statistics' TableBuilder does it).

- Every patient of a node has a fixed *record key*, a uniform integer in [0, 2^32):
  HMAC-SHA256(node secret, patient_key), truncated to its first 4 bytes. It is stored in
  `patients.record_key` (set by the sync; rows without one get it here before an answer)
  and never leaves the node. The secret is the node's own: the setting
  `SPE_NODE_CELLKEY_SECRET`, else the file `<data_dir>/nodes/<node_id>/cellkey.secret`,
  made on first use with mode 0600.
- A set of patients (a cell, a total) has the *cell key* (sum of its record keys) mod
  2^32, uniform on [0, 2^32) as soon as the set is not empty; u = cell key / 2^32.
- Its noise is looked up in the perturbation table (`PTable`) at (n, u): the inverse
  distribution function of the table's row for n, evaluated at u. So the same set of
  patients always gets the same value however the question is worded, and two different
  sets get independent noises (their keys differ by the keys of the patients in one and
  not the other, unknown to the asker).

The table is the policy's (`policies/disclosure`: `min_count`, `max_noise` D, `variance` V).
It is built for every n >= min_count; rows n >= min_count + D are all alike. Row n is a
distribution over the integers j in [max(-D, min_count - n), D] (so the shown value n + j is
never under min_count and never further than D from n) with mean exactly 0 (no bias, at any
n) and variance at most V:

    p(j) ∝ exp(a·j − j² / (2 s²))

a discretised Gaussian of scale s, tilted by a. For the full support [-D, D] the
distribution is symmetric: a = 0 and s is found by bisection so that the variance is V
(or the largest the support allows, that of the uniform distribution, D(D+1)/3, when V is
above it). Near the threshold the support is cut on the negative side; there the same s is
kept and a (negative) found by bisection so that the mean is 0 (the mean is increasing in a:
it is an exponential family in a); should the variance then exceed V, s is shrunk by 5%
steps and a found again. At n = min_count the support is [0, D] and the only distribution
of mean 0 is the point mass at 0: a cell at the threshold is shown as it is.

Continuous statistics (a helper for `stats`) take deterministic uniforms from the same cell
key and a salt naming the statistic (`uniforms_for`): the same set and statistic get the
same numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from gateway.node.index.models import Patient
from spe.settings import Settings

KEY_SPACE = 2**32
SECRET_FILE = "cellkey.secret"

# ---------------------------------------------------------------------------- the secret


def node_data_dir(settings: Settings, node_id: str) -> Path:
    """Where a node keeps its own files (the demo's node databases live there too)."""
    return settings.data_dir / "nodes" / node_id


def _read_secret(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        data = f.read().strip()
    if len(data) < 32:
        raise ValueError(f"{path} holds no usable secret (fewer than 32 bytes)")
    return data


def node_secret(settings: Settings, node_id: str) -> bytes:
    """The node's record-key secret: the setting, else its file, made on first use.

    The file is written under another name with mode 0600 and linked into place, so two
    processes starting at once agree on one secret (the loser of the link reads the
    winner's)."""
    if settings.node_cellkey_secret is not None:
        value = settings.node_cellkey_secret.get_secret_value().encode()
        if len(value) < 16:
            raise ValueError("SPE_NODE_CELLKEY_SECRET must be at least 16 characters")
        return value
    path = node_data_dir(settings, node_id) / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(32).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path)


class NodeSecret:
    """The secret read once, on first use (an app holds one; a node that answers no
    statistics query never makes the file)."""

    def __init__(self, settings: Settings, node_id: str) -> None:
        self._settings, self._node_id = settings, node_id
        self._value: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        with self._lock:
            if self._value is None:
                self._value = node_secret(self._settings, self._node_id)
            return self._value


# ---------------------------------------------------------------------------- record keys


def record_key(secret: bytes, patient_key: str) -> int:
    """The patient's fixed key in [0, 2^32): HMAC-SHA256(secret, patient_key), 4 bytes."""
    digest = hmac.new(secret, patient_key.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big")


_FILL = (update(Patient.__table__).where(Patient.__table__.c.id == bindparam("pid"))
         .values(record_key=bindparam("rk")))


def fill_record_keys(session: Session, secret: bytes) -> int:
    """Give every patient without a record key its key (patients inserted outside a sync);
    returns how many were filled."""
    missing = session.execute(select(Patient.id, Patient.patient_key)
                              .where(Patient.record_key.is_(None))).all()
    if missing:
        session.connection().execute(_FILL, [
            {"pid": pid, "rk": record_key(secret, key)} for pid, key in missing])
    return len(missing)


def load_record_keys(session: Session, secret: bytes) -> np.ndarray:
    """The node's record keys as a uint32 array indexed by patient id (`keys[ids]` are the
    keys of those patients), after filling any missing ones."""
    fill_record_keys(session, secret)
    rows = session.connection().execute(
        select(Patient.id, Patient.record_key)).all()
    if not rows:
        return np.zeros(0, dtype=np.uint32)
    data = np.asarray(rows, dtype=np.int64)
    keys = np.zeros(int(data[:, 0].max()) + 1, dtype=np.uint32)
    keys[data[:, 0]] = data[:, 1].astype(np.uint32)
    return keys


# ---------------------------------------------------------------------------- the table


def _moments(values: np.ndarray, a: float, s: float) -> tuple[np.ndarray, float, float]:
    logits = a * values - values**2 / (2 * s * s)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    mean = float(p @ values)
    return p, mean, float(p @ (values - mean) ** 2)


def _bisect(f, lo: float, hi: float, target: float, steps: int = 200) -> float:
    """x in [lo, hi] with f(x) = target, f increasing."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _row(low: int, high: int, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """(values, probabilities) of the row over [low, high] (low <= 0 <= high)."""
    values = np.arange(low, high + 1, dtype=np.float64)
    if low == 0 or high == 0 or variance <= 0:
        # A one-sided support: only the point mass at 0 has mean 0.
        return np.array([0]), np.array([1.0])
    full = np.arange(-high, high + 1, dtype=np.float64)
    top = high * (high + 1) / 3  # the uniform distribution's variance on [-D, D]
    s = (1e6 if variance >= top
         else _bisect(lambda x: _moments(full, 0.0, x)[2], 1e-3, 1e6, variance))
    while True:
        a = 0.0 if low == -high else _bisect(
            lambda x, s=s: _moments(values, x, s)[1], -60, 60, 0.0)
        p, _, var = _moments(values, a, s)
        if var <= variance * (1 + 1e-9):
            return values.astype(np.int64), p
        s *= 0.95


@dataclass(frozen=True, eq=False)
class PTable:
    """The perturbation table: for each n >= `min_count`, the distribution of the noise
    added to a count n (see the module's docstring). Rows are kept for n = min_count ..
    min_count + max_noise; larger n use the last."""

    min_count: int
    max_noise: int
    variance: float
    rows: tuple[tuple[np.ndarray, np.ndarray], ...]  # (noise values, their probabilities)

    @classmethod
    def from_policy(cls, params: Mapping[str, object],
                    min_count: int | None = None) -> PTable:
        """From the policy's `perturbation` ({"method": "cell-key", "max_noise": D,
        "variance": V}) and the rule's `min_count` (given here or in `params`).
        ValueError when anything is missing or malformed."""
        if params.get("method") != "cell-key":
            raise ValueError(f"unknown perturbation method {params.get('method')!r}")
        least = min_count if min_count is not None else params.get("min_count")
        d, v = params.get("max_noise"), params.get("variance")
        if not (_int(least) and least >= 0 and _int(d) and 0 <= d <= 1000  # type: ignore[operator]
                and isinstance(v, int | float) and not isinstance(v, bool)
                and math.isfinite(v) and v >= 0):
            raise ValueError("a cell-key perturbation needs a whole min_count >= 0, a whole "
                             "max_noise in [0, 1000] and a finite variance >= 0")
        return _table(int(least), int(d), float(v))  # type: ignore[arg-type]

    def row(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n < self.min_count:
            raise ValueError(f"no noise for a count under min_count ({n} < {self.min_count}):"
                             " such a count is suppressed, not shown")
        return self.rows[min(n - self.min_count, len(self.rows) - 1)]

    def noise(self, n: int, u: float) -> int:
        """The noise of a count n at the uniform u in [0, 1)."""
        values, p = self.row(n)
        i = int(np.searchsorted(np.cumsum(p), u, side="right"))
        return int(values[min(i, len(values) - 1)])

    def sd(self, n: int) -> float:
        """The standard deviation of the noise at n (0 at min_count)."""
        values, p = self.row(n)
        return math.sqrt(max(float(p @ values.astype(np.float64) ** 2), 0.0))

    def bound(self, n: int) -> int:
        """The largest |noise| that row n can give."""
        values, _ = self.row(n)
        return int(np.abs(values).max())


def _int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@lru_cache(maxsize=32)
def _table(min_count: int, max_noise: int, variance: float) -> PTable:
    rows = tuple(_row(max(-max_noise, -k), max_noise, variance)
                 for k in range(max_noise + 1))
    return PTable(min_count, max_noise, variance, rows)


# ---------------------------------------------------------------------------- lookups


def cell_key(ids: np.ndarray, record_keys: np.ndarray) -> int:
    """(Sum of the record keys of `ids`) mod 2^32; `record_keys` indexed by patient id."""
    if len(ids) == 0:
        return 0
    return int(record_keys[np.asarray(ids, dtype=np.int64)].astype(np.uint64).sum()
               % np.uint64(KEY_SPACE))


def _hashed(key: int, n: int, salt: str, k: int) -> np.ndarray:
    out = np.empty(k, dtype=np.float64)
    for i in range(k):
        digest = hashlib.sha256(f"{key}:{n}:{salt}:{i}".encode()).digest()
        out[i] = (int.from_bytes(digest[:8], "big") >> 11) / 2.0**53
    return out


def noise_for(ids: np.ndarray, record_keys: np.ndarray, table: PTable, *,
              salt: str = "") -> int:
    """The noise of the count of the set `ids` (unique patient ids; `record_keys` from
    `load_record_keys`): the same set (and salt) always gets the same noise. Without a salt
    the uniform is the cell key / 2^32 itself (the ABS's construction); a salt (naming
    another statistic of the same set) hashes it with the key. ValueError for a set under
    the table's min_count: suppress it instead."""
    n = len(ids)
    key = cell_key(ids, record_keys)
    u = key / KEY_SPACE if not salt else float(_hashed(key, n, salt, 1)[0])
    return table.noise(n, u)


def uniforms_for(ids: np.ndarray, record_keys: np.ndarray, salt: str, k: int) -> np.ndarray:
    """k uniforms in [0, 1) determined by the set's cell key, its size and `salt` (name the
    statistic: "mean:age"), for perturbing continuous statistics consistently."""
    return _hashed(cell_key(ids, record_keys), len(ids), salt, k)


__all__ = [
    "KEY_SPACE", "NodeSecret", "PTable", "cell_key", "fill_record_keys", "load_record_keys",
    "node_data_dir", "node_secret", "noise_for", "record_key", "uniforms_for",
]
