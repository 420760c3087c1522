"""Consistent perturbation of the statistics tier: the cell-key method (as the Australian
Bureau of Statistics' TableBuilder does it), hardened against the two oracles a pure
cell-key method leaves open in a query language as free as ours.

- Every patient of a node has a fixed *record key*, a uniform integer in [0, 2^32):
  HMAC-SHA256(node secret, patient_key), truncated to its first 4 bytes. It is stored in
  `patients.record_key` (set by the sync; rows without one get it here before an answer)
  and never leaves the node. The secret is the node's own: the setting
  `SPE_NODE_CELLKEY_SECRET`, else the file `<data_dir>/nodes/<node_id>/cellkey.secret`,
  made on first use with mode 0600.
- A set of patients (a cell, a total) has the *cell key* (sum of its record keys) mod
  2^32, uniform on [0, 2^32) as soon as the set is not empty; u = cell key / 2^32.
- Its noise is looked up in the perturbation table (`PTable`) at (n, u): the inverse
  distribution function of the table's row evaluated at u. So the same set of patients
  always gets the same noise, and two different sets get independent noises (their keys
  differ by the keys of the patients in one and not the other, unknown to the asker).

The table (`policies/disclosure`: `min_count`, `max_noise` D, `variance` V) has one row
for every n >= min_count: the integers j in [-D, D] with

    p(j) ∝ exp(-j² / (2 s²))

a discretised Gaussian whose scale s is found by bisection so that its variance is V (or
the uniform distribution on [-D, D] when V is at or above its variance D(D+1)/3). It is
symmetric, so its mean is exactly 0, and it is the same for every n: neither the noise nor
the spread said alongside a value tells how near the threshold a count is.

`CountPerturbation` is the count rule built from it (see its docstring): the noise is the
sum of a part keyed by the set alone and a part keyed by the set and the question's
criteria (so that two wordings whose sets are equal exactly when one person lacks a
diagnosis are not told apart by equal values), and a count is shown only when n + noise
>= min_count + D (so the threshold between shown and suppressed is itself noisy, and never
lets an exact small count be found by moving a bound).

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
from gateway.node.index.repository import index_version
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


_KEYS = select(Patient.id, Patient.record_key)
# The last keys read per database, with the index version they were read at: reading 10,000
# rows costs more than answering a count, and they change only with the index.
_cache: dict[str, tuple[tuple, np.ndarray]] = {}
_cache_lock = threading.Lock()


def load_record_keys(session: Session, secret: bytes) -> np.ndarray:
    """The node's record keys as a uint32 array indexed by patient id (`keys[ids]` are the
    keys of those patients), after filling any missing ones. Read-only: do not modify."""
    where = str(session.get_bind().url)
    version = index_version(session)
    with _cache_lock:
        cached = _cache.get(where)
    if cached is not None and cached[0] == version and version[0] == version[2]:
        return cached[1]
    if fill_record_keys(session, secret):
        version = index_version(session)
    rows = session.connection().execute(_KEYS).all()
    if not rows:
        return np.zeros(0, dtype=np.uint32)
    ids, values = zip(*rows, strict=True)
    index = np.array(ids, dtype=np.int64)
    keys = np.zeros(int(index.max()) + 1, dtype=np.uint32)
    keys[index] = np.array(values, dtype=np.int64).astype(np.uint32)
    keys.setflags(write=False)
    with _cache_lock:
        _cache[where] = (version, keys)
    return keys


# ---------------------------------------------------------------------------- the table


def _row(d: int, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """(values, probabilities) over [-d, d]: p(j) ∝ exp(-j² / (2 s²)), s by bisection so
    that the variance is `variance` (or that of the uniform distribution on [-d, d],
    d(d+1)/3, the largest the support allows, when `variance` is above it)."""
    if d == 0 or variance <= 0:
        return np.array([0], dtype=np.int64), np.array([1.0])
    values = np.arange(-d, d + 1, dtype=np.float64)

    def probabilities(s: float) -> np.ndarray:
        logits = -values**2 / (2 * s * s)
        p = np.exp(logits - logits.max())
        return p / p.sum()

    if variance >= d * (d + 1) / 3:
        p = np.full(len(values), 1 / len(values))
    else:
        lo, hi = 1e-3, 1e6  # the variance increases with s
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if float(probabilities(mid) @ values**2) < variance else (lo, mid)
        p = probabilities(lo)  # the lower end: a variance at most `variance`
    return values.astype(np.int64), p


@dataclass(frozen=True, eq=False)
class PTable:
    """The perturbation table: the distribution of the noise added to a count n >=
    `min_count` (see the module's docstring): the same symmetric row for every such n, so
    its mean is 0 and its variance at most `variance` whatever n is, and nothing about n
    follows from which row was used. Counts under `min_count` get no noise (they are
    never shown)."""

    min_count: int
    max_noise: int
    variance: float
    values: np.ndarray
    probabilities: np.ndarray

    @classmethod
    def from_policy(cls, params: Mapping[str, object],
                    min_count: int | None = None) -> PTable:
        """From the policy's `perturbation` ({"method": "cell-key", "max_noise": D,
        "variance": V, ...}) and the rule's `min_count` (given here or in `params`): the
        table of the whole noise. ValueError when anything is missing or malformed."""
        if params.get("method") != "cell-key":
            raise ValueError(f"unknown perturbation method {params.get('method')!r}")
        least = min_count if min_count is not None else params.get("min_count")
        d, v = params.get("max_noise"), params.get("variance")
        if not (_int(least) and least >= 0 and _bound(d) and _variance(v)):  # type: ignore[operator]
            raise ValueError("a cell-key perturbation needs a whole min_count >= 0, a whole "
                             "max_noise in [0, 1000] and a finite variance >= 0")
        return _table(int(least), int(d), float(v))  # type: ignore[arg-type]

    def row(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(noise values, their probabilities) for a count n."""
        if n < self.min_count:
            raise ValueError(f"no noise for a count under min_count ({n} < {self.min_count}):"
                             " such a count is suppressed, not shown")
        return self.values, self.probabilities

    def noise(self, n: int, u: float) -> int:
        """The noise of a count n at the uniform u in [0, 1)."""
        values, p = self.row(n)
        i = int(np.searchsorted(np.cumsum(p), u, side="right"))
        return int(values[min(i, len(values) - 1)])

    @property
    def sd(self) -> float:
        return math.sqrt(float(self.probabilities @ self.values.astype(np.float64) ** 2))


def _int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _bound(x: object) -> bool:
    return _int(x) and 0 <= x <= 1000  # type: ignore[operator]


def _variance(x: object) -> bool:
    return (isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            and x >= 0)


@lru_cache(maxsize=32)
def _table(min_count: int, max_noise: int, variance: float) -> PTable:
    values, p = _row(max_noise, variance)
    return PTable(min_count, max_noise, variance, values, p)


@dataclass(frozen=True, eq=False)
class CountPerturbation:
    """How a count of the statistics tier is shown (policies/disclosure `perturbation`).

    The noise has two parts, each looked up from the set's cell key:
    - the set's own (`by_set`: |noise| <= max_noise - question_max_noise), the same for the
      same set of patients however asked;
    - the question's (`by_question`: |noise| <= question_max_noise), the same for the same
      set asked by the same criteria (the `where` of the query, hashed with the cell key).
    Without the second, two differently worded questions whose sets are equal exactly when
    one person lacks a diagnosis would give equal values exactly then: an oracle. With it,
    equal sets asked differently differ as much as sets one person apart do; averaging the
    question's part away over many rewordings leaves the set's own noise, which stays.

    A count is shown when n + noise >= min_count + max_noise (so never for n < min_count,
    and near the threshold only as the noise falls): whether a count is shown depends on
    its noise, not on n alone, so moving a bound to find where answers start being
    suppressed finds no exact count."""

    min_count: int
    max_noise: int
    variance: float
    by_set: PTable
    by_question: PTable | None

    @classmethod
    def from_policy(cls, params: Mapping[str, object], min_count: int) -> CountPerturbation:
        """ValueError when anything is missing or malformed (the caller refuses)."""
        whole = PTable.from_policy(params, min_count)
        qd, qv = params.get("question_max_noise", 0), params.get("question_variance", 0)
        if not (_bound(qd) and _variance(qv) and qd <= whole.max_noise  # type: ignore[operator]
                and qv <= whole.variance):  # type: ignore[operator]
            raise ValueError("a cell-key perturbation's question_max_noise and "
                             "question_variance are whole and at most max_noise and "
                             "variance")
        by_set = _table(min_count, whole.max_noise - int(qd),  # type: ignore[arg-type]
                        whole.variance - float(qv))  # type: ignore[arg-type]
        by_question = _table(min_count, int(qd), float(qv)) if qd else None  # type: ignore[arg-type]
        return cls(min_count, whole.max_noise, whole.variance, by_set, by_question)

    @property
    def shown_from(self) -> int:
        """The smallest value shown."""
        return self.min_count + self.max_noise

    @property
    def sd(self) -> float:
        """The noise's standard deviation: at most sqrt(variance)."""
        q = self.by_question.sd if self.by_question is not None else 0.0
        return math.sqrt(self.by_set.sd**2 + q**2)

    def noise(self, ids: np.ndarray, record_keys: np.ndarray, question: str) -> int:
        e = noise_for(ids, record_keys, self.by_set)
        if self.by_question is not None:
            e += noise_for(ids, record_keys, self.by_question, salt=f"question:{question}")
        return e

    def count(self, ids: np.ndarray, record_keys: np.ndarray, question: str) -> int | None:
        """The shown count of the set `ids` asked by `question` (a digest of the query's
        criteria), or None: suppressed."""
        n = len(ids)
        if n < self.min_count:
            return None
        value = n + self.noise(ids, record_keys, question)
        return value if value >= self.shown_from else None


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
    "KEY_SPACE", "CountPerturbation", "NodeSecret", "PTable", "cell_key", "fill_record_keys",
    "load_record_keys", "node_data_dir", "node_secret", "noise_for", "record_key",
    "uniforms_for",
]
