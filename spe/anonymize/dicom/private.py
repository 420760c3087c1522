"""Which private elements survive under the Retain Safe Private Option.

A private element (gggg,xxee) belongs to the block whose creator is (gggg,00xx); it is safe
when (creator, ee) is in the safe list, ee being the element's offset inside its block
(0x00-0xFF), which is how vendors document their private dictionaries. A creator survives
only if one of its block's elements does, so no empty reservation is left behind.
"""

from __future__ import annotations

from pydicom.dataset import Dataset


def private_to_remove(ds: Dataset, safe: frozenset[tuple[str, int]]) -> set[int]:
    """Tags of the private elements (creators included) of `ds`'s top level to drop."""
    private = [tag for tag in ds.keys() if tag >> 16 & 1]
    if not private:
        return set()
    creators: dict[tuple[int, int], str] = {}
    for tag in private:
        element = tag & 0xFFFF
        if 0x10 <= element <= 0xFF:
            value = ds[tag].value
            creators[(tag >> 16, element)] = str(value).strip() if value else ""
    remove: set[int] = set()
    used: set[tuple[int, int]] = set()
    for tag in private:
        element = tag & 0xFFFF
        if element < 0x1000:
            continue
        block = (tag >> 16, element >> 8)
        creator = creators.get(block)
        if creator is not None and (creator, element & 0xFF) in safe:
            used.add(block)
        else:
            remove.add(tag)
    for tag in private:
        element = tag & 0xFFFF
        if element < 0x1000 and (tag >> 16, element) not in used:
            remove.add(tag)
    return remove
