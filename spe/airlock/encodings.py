"""The forms a job can give the extract's terms to slip them past a lookup of whole tokens.

A pseudonym written backwards, cut in pieces ("abcd efgh", one piece per cell or line), as
the hex or base64 of its bytes, or as a number (the integer of its bytes, of its base32 or
hex digits) is still the pseudonym. Every term long enough to be found by chance almost
never (`MIN_COMPACT`) is put, in each of these forms, into one Aho-Corasick automaton
(pyahocorasick), and each output is searched once, as its *compact* text: its ASCII
letters and digits only, lower-cased. Separators are gone from both sides, so a term split
by spaces, commas, dots, cells or lines is found whole; letters and digits are kept in
order, so its place in the file is known.
"""

from __future__ import annotations

import base64
import binascii
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import ahocorasick

# Shorter compact forms would be found in long runs of digits or letters by chance.
MIN_COMPACT = 10
MIN_DIGITS = 14  # a run of digits only: tables of numbers compact into long digit runs
# Each form is looked for by its first characters only: 24 letters or digits of a
# pseudonym or an encoding are as unlikely by chance as all of them, and a smaller trie
# builds sooner (the automaton is built once per staged extract).
PREFIX = 24
_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]+")
_BASE32 = re.compile(r"^[a-z2-7]+$")
_HEX = re.compile(r"^[0-9a-f]+$")

AS_WRITTEN, REVERSED = "as written (split or joined)", "reversed"


def compact(text: str) -> str:
    return _NOT_ALNUM.sub("", text).lower()


def _as_number(data: bytes) -> str:
    return str(int.from_bytes(data, "big")) if data else ""


def _base64_cores(data: bytes) -> Iterator[str]:
    """What base64 of `data` shows wherever `data` starts in what was encoded: at each of
    the three alignments, the characters that depend on `data` alone."""
    for pad, start in ((0, 0), (1, 2), (2, 3)):  # the first character free of the pad
        encoded = base64.b64encode(b"\0" * pad + data).decode()
        usable = (pad + len(data)) // 3 * 4
        yield encoded[start:usable]


def forms(term: str) -> Iterator[tuple[str, str]]:
    """(form, compact text) of `term` in each encoding looked for."""
    base = compact(term)
    yield AS_WRITTEN, base
    yield REVERSED, base[::-1]
    for spelled in dict.fromkeys((term, term.lower(), term.upper())):
        raw = spelled.encode()
        yield "hex", raw.hex()
        for core in _base64_cores(raw):
            yield "base64", compact(core)
        yield "a number", _as_number(raw)
    if _BASE32.match(base) and len(base) % 8 == 0:
        try:
            decoded = base64.b32decode(base.upper())
        except binascii.Error:
            decoded = b""
        if decoded:
            yield "a number", _as_number(decoded)
            yield "hex", decoded.hex()
            for core in _base64_cores(decoded):
                yield "base64", compact(core)
    if _HEX.match(base) and not base.isdigit():
        yield "a number", str(int(base, 16))
    if base.isdigit():
        yield "hex", format(int(base), "x")


def _searchable(text: str) -> bool:
    return len(text) >= (MIN_DIGITS if text.isdigit() else MIN_COMPACT)


@dataclass(frozen=True)
class Hit:
    category: str
    form: str
    start: int  # offset in the compact text
    end: int


class TermAutomaton:
    """Every searchable form of the extract's terms, found in one pass over a text."""

    def __init__(self, terms: Iterable[tuple[str, str]]) -> None:
        self._automaton = ahocorasick.Automaton()
        added: set[str] = set()
        for term, category in terms:
            for form, text in forms(term):
                text = text[:PREFIX]
                if _searchable(text) and text not in added:
                    added.add(text)
                    self._automaton.add_word(text, (category, form, len(text)))
        self.empty = len(self._automaton) == 0
        if not self.empty:
            self._automaton.make_automaton()

    def search(self, packed: str) -> Iterator[Hit]:
        if self.empty or not packed:
            return
        for end, (category, form, length) in self._automaton.iter(packed):
            yield Hit(category, form, end - length + 1, end + 1)


class CompactText:
    """A text's compact form and where each of its lines starts in it."""

    def __init__(self, text: str) -> None:
        lines = text.split("\n")
        self.starts: list[int] = []
        parts = []
        offset = 0
        for line in lines:
            self.starts.append(offset)
            packed = compact(line)
            parts.append(packed)
            offset += len(packed)
        self.text = "".join(parts)

    def line_of(self, offset: int) -> int:
        """The 1-based line where the compact character at `offset` was written."""
        return bisect_right(self.starts, offset)
