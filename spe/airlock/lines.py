"""Line numbers of offsets in a text, without counting from the start each time (a file
with many findings would take quadratic time)."""

from __future__ import annotations

from bisect import bisect_right


class Lines:
    def __init__(self, text: str) -> None:
        self._starts = [0]
        find = text.find
        at = find("\n")
        while at != -1:
            self._starts.append(at + 1)
            at = find("\n", at + 1)

    def at(self, offset: int) -> int:
        """The 1-based line of `offset`."""
        return bisect_right(self._starts, offset)
