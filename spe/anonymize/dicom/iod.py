"""Attribute Types of PS3.3 where the profile needs them, and the choice they decide.

PS3.15 E.1.1 leaves a combined action code (X/Z, X/D, Z/D, X/Z/D) to the implementation
with one rule: the result must stay a valid object. An attribute of Type 3 may be removed,
one of Type 2 must stay and may be empty, one of Type 1 needs a value (a dummy). Which Type
an attribute has depends on the IOD (by SOP Class UID) and on where it sits: the Referenced
Study Sequence is Type 3 in the General Study module of an MR image, the Verifying Observer
Sequence Type 1C in an SR document. `data/iod-types.json` (written by
`generate_iod_types` from innolitics' JSON of PS3.3) holds those Types, compactly, for the
attributes the profile's choices depend on; `types_for(sop_class_uid)` gives the tree of one
IOD, built once per SOP class.

A tree maps a tag (int) to (Type, children); children is the tree inside the sequence's
items, {} where nothing there matters (an attribute of interest that is absent from a known
tree is not part of the IOD at that place: it counts as Type 3). `None` stands for an
unknown SOP class, where `choose` takes the safe side.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from pathlib import Path

DATA = Path(__file__).parent / "data" / "iod-types.json"

Tree = dict[int, tuple[str, "Tree"]]

REQUIRED = frozenset({"1", "1C"})
EMPTY_ALLOWED = frozenset({"2", "2C"})
# Preference per Type, first allowed one wins (PS3.15 E.1.1: remove Type 3, empty Type 2,
# a dummy for Type 1). Unknown Type: a dummy or an empty value is valid whatever the Type,
# so elements keep the old order D over Z over X; a sequence goes (X first), since a dummy
# item cannot be built without knowing what its items need, and an empty one keeps nothing.
_ORDER = {
    "required": ("D", "Z", "X"),
    "empty": ("Z", "D", "X"),
    "optional": ("X", "Z", "D"),
    "optional_sq": ("X", "D", "Z"),
    "unknown": ("D", "Z", "X"),
    "unknown_sq": ("X", "Z", "D"),
}


def choose(code: str, kind: str | None, sequence: bool) -> str:
    """The action for combined `code` (or a plain one) given the attribute's Type here."""
    allowed = code.split("/")
    if len(allowed) == 1:
        return code
    if kind is None:
        order = _ORDER["unknown_sq" if sequence else "unknown"]
    elif kind in REQUIRED:
        order = _ORDER["required"]
    elif kind in EMPTY_ALLOWED:
        order = _ORDER["empty"]
    else:
        order = _ORDER["optional_sq" if sequence else "optional"]
    return next(action for action in order if action in allowed)


@cache
def _data() -> dict:
    return json.loads(DATA.read_text(encoding="utf-8"))


def _compile(node: dict) -> Tree:
    tree: Tree = {}
    for key, entry in node.items():
        if isinstance(entry, str):
            tree[int(key, 16)] = (entry, {})
        else:
            tree[int(key, 16)] = (entry[0], _compile(entry[1]))
    return tree


@cache
def _tree(index: int) -> Tree:
    return _compile(_data()["trees"][index])


@lru_cache(maxsize=1024)  # the class UID comes from the file: bounded
def types_for(sop_class_uid: str) -> Tree | None:
    """The Types tree of the IOD of `sop_class_uid`; None if the class is not known."""
    data = _data()
    iod = data["sop_classes"].get(sop_class_uid.strip().rstrip("\0").strip())
    if iod is None:
        return None
    return _tree(data["iods"][iod])
