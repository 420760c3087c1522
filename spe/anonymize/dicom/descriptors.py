"""Clean Descriptors Option: free text with the dataset's own identifying values taken out.

Rule: collect the identifying values of the same dataset (every PN component, and the text,
date and id values of attributes the profile does not keep: IDs, dates, institution and
address, station, private copies). Multi-word values are removed as phrases first, then any
word equal to an identifying word is removed (case-insensitive, punctuation at the word's
edges ignored). If what is left still holds a run of 4 or more digits or a digit group with
a separator (a date, an MRN, a phone number), the descriptor cannot be trusted and is dropped
(the attribute falls back to its basic profile action).
"""

from __future__ import annotations

import re
from functools import lru_cache

from pydicom.dataset import Dataset

PUNCTUATION = ".,;:()[]{}\"'!?"
ID_LIKE = re.compile(r"\d{4,}|\d+[/.\-:]\d+")
WORD_SPLIT = re.compile(r"[\s^=]+")


class Identifiers:
    def __init__(self) -> None:
        self.words: set[str] = set()
        self.phrases: set[str] = set()

    def add(self, value: str) -> None:
        value = value.strip()
        if not value:
            return
        words = [w.strip(PUNCTUATION).casefold() for w in WORD_SPLIT.split(value)]
        self.words.update(w for w in words if len(w) >= 2)
        if len(words) > 1:
            self.phrases.add(" ".join(value.replace("^", " ").split()).casefold())

    def clean(self, text: str) -> str | None:
        """The text with identifying values removed, or None if it must be dropped."""
        folded = " ".join(text.split())
        for phrase in sorted(self.phrases, key=len, reverse=True):
            folded = _phrase_pattern(phrase).sub(" ", folded)
        kept = [w for w in folded.split()
                if w.strip(PUNCTUATION).casefold() not in self.words]
        cleaned = " ".join(kept)
        if ID_LIKE.search(cleaned):
            return None
        return cleaned


@lru_cache(maxsize=4096)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    """The phrase as a case-insensitive literal pattern (the same phrases recur per patient)."""
    return re.compile(re.escape(phrase), flags=re.IGNORECASE)


def collect(ds: Dataset, identifying: frozenset[int], into: Identifiers) -> Identifiers:
    """Walk `ds` (all levels) adding the values of `identifying` tags, PN and private text.

    An element is decoded only if its value is wanted: the VR it was read with decides,
    except an implicit VR or UN one, which is decoded to learn its VR as before.
    """
    for key, elem in list(ds._dict.items()):
        vr = elem.VR
        if vr is None or vr == "UN":
            elem = ds[key]
            vr = elem.VR
        tag = int(key)
        if vr == "SQ":
            for item in ds[key].value:
                collect(item, identifying, into)
            continue
        if vr == "PN" or tag in identifying or (
                tag >> 16 & 1 and vr in ("LO", "SH", "PN", "DA", "LT", "ST")):
            elem = ds[key]
            values = elem.value if elem.VM > 1 else [elem.value]
            for value in values:
                if value not in (None, ""):
                    into.add(str(value))
    return into
