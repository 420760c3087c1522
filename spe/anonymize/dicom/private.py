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


def load_safe_private(path) -> frozenset[tuple[str, int]]:
    """The operator's safe list: a JSON list of {"creator": "...", "element": "0x10"}.

    No list ships with the project: what is safe depends on the vendor's private dictionary
    and software version, which the institution running the node has to vouch for.
    Raises ValueError naming the bad entry.
    """
    import json
    from pathlib import Path

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the safe-private list {path}: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{creator, element}} objects")
    safe: set[tuple[str, int]] = set()
    for n, entry in enumerate(data, 1):
        try:
            creator = entry["creator"].strip()
            element = entry["element"]
            element = int(element, 16) if isinstance(element, str) else int(element)
        except (TypeError, KeyError, ValueError, AttributeError):
            raise ValueError(f"{path}: entry {n} must be {{\"creator\": text, "
                             f"\"element\": \"0x00\"-\"0xFF\"}}, got {entry!r}") from None
        if not creator or not 0 <= element <= 0xFF:
            raise ValueError(f"{path}: entry {n}: empty creator or element outside 0x00-0xFF")
        safe.add((creator, element))
    return frozenset(safe)
