"""Differencing (tracker) control: an answer is suppressed if, set against an answer the
same user was shown recently, it would single out a group smaller than the threshold.

Two answers A and B on one node let their asker compute |A \\ B| and |B \\ A| by
subtraction (e.g. "all women with C71" minus "all women with C71 except those aged 47").
So for each set about to be shown, both differences with every recent shown set of that
user must be either 0 or at least the threshold. Sets are bitmaps over patient ids,
compared with numpy in one pass over the history.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_bitmap(ids: np.ndarray) -> bytes:
    """A sorted array of patient ids as packed bits (bit i set: patient id i)."""
    if len(ids) == 0:
        return b""
    mask = np.zeros(int(ids[-1]) + 1, dtype=bool)
    mask[ids] = True
    return np.packbits(mask).tobytes()


def _stack(bitmaps: Sequence[bytes], width: int) -> np.ndarray:
    out = np.zeros((len(bitmaps), width), dtype=np.uint8)
    for i, b in enumerate(bitmaps):
        out[i, :len(b)] = np.frombuffer(b, dtype=np.uint8)
    return out


def smallest_difference(ids: np.ndarray, earlier: Sequence[bytes]) -> int | None:
    """The smallest non-zero |new \\ old| or |old \\ new| against the earlier sets, or None
    when every earlier set is identical to this one or there is none."""
    if not earlier:
        return None
    new = np.frombuffer(to_bitmap(ids), dtype=np.uint8)
    width = max(len(new), *(len(b) for b in earlier))
    old = _stack(earlier, width)
    cur = np.zeros(width, dtype=np.uint8)
    cur[:len(new)] = new
    only_new = np.bitwise_count(cur & ~old).sum(axis=1, dtype=np.int64)
    only_old = np.bitwise_count(old & ~cur).sum(axis=1, dtype=np.int64)
    diffs = np.concatenate([only_new, only_old])
    diffs = diffs[diffs > 0]
    return int(diffs.min()) if len(diffs) else None


def reveals_small_group(ids: np.ndarray, earlier: Sequence[bytes], threshold: int) -> bool:
    smallest = smallest_difference(ids, earlier)
    return smallest is not None and smallest < threshold


__all__ = ["reveals_small_group", "smallest_difference", "to_bitmap"]
