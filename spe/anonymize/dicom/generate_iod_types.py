"""Write `data/iod-types.json`, the attribute Types of PS3.3 the profile's choices need.

Run `python -m spe.anonymize.dicom.generate_iod_types` with the `dicom-standard` package
installed (innolitics' JSON of PS3.3, about 55 MB; a tool of this generator only, never a
dependency of the project at run time). The output is a compact extract:

- `sop_classes`: SOP Class UID -> IOD id (PS3.4 Annex B via innolitics' `sops.json`);
- `iods`: IOD id -> index into `trees`; IODs with the same Types share a tree;
- `trees`: for each IOD, the attribute Types at every place (nesting included) where an
  attribute appears that Table E.1-1 gives a combined action (X/Z, X/D, Z/D, X/Z/D), or a
  D or combined action on a sequence, or that is a text attribute the table does not list
  and that is not known safe (`unlisted_text.unlisted()`, decided as X/Z/D), and, below a
  sequence that may get a dummy item, its Type 1 and 2 attributes (conditional ones too)
  that a valid dummy item needs. A node maps a tag
  ("GGGGEEEE") to its Type ("1", "1C", "2", "2C", "3"), or to [Type, {children}] for a
  sequence whose items matter.

Where an attribute appears in several modules or macros of one IOD (functional group macros
included, under Shared and Per-frame Functional Groups Sequence), the strictest Type wins:
1 over 1C over 2 over 2C over 3. A test re-runs this to prove the committed file matches.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from pydicom.datadict import DicomDictionary

from spe.anonymize.dicom import table, unlisted_text

HERE = Path(__file__).parent
TARGET = HERE / "data" / "iod-types.json"
PACKAGE = "dicom-standard"
INPUTS = ("sops.json", "ciods.json", "ciod_to_modules.json", "module_to_attributes.json",
          "ciod_to_fg_macros.json", "macro_to_attributes.json")
STRICTNESS = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}
# Shared and Per-frame Functional Groups Sequence: where functional group macros sit.
FUNCTIONAL_GROUPS = ("52009229", "52009230")
# Below a sequence that may get a dummy item, how deep its required attributes are kept.
DUMMY_DEPTH = 6
COMBINED = {"X/Z", "X/D", "Z/D", "X/Z/D"}


def standard_dir() -> Path:
    """The folder of innolitics' JSON files as the `dicom-standard` wheel installs them."""
    for file in metadata.files(PACKAGE) or ():
        if file.name == "module_to_attributes.json":
            return Path(str(file.locate())).parent
    raise FileNotFoundError(f"{PACKAGE} is installed without its standard/*.json")


def interesting() -> tuple[set[str], set[str]]:
    """(tags whose Type decides a combined action, sequences that may get a dummy item)."""
    typed, dummies = {f"{tag:08X}" for tag in unlisted_text.unlisted()}, set()
    for tag, (basic, _options) in table.EXACT.items():
        vr = DicomDictionary.get(tag, ("",))[0]
        key = f"{tag:08X}"
        if basic in COMBINED:
            typed.add(key)
        if vr == "SQ" and "D" in basic.split("/"):
            typed.add(key)
            dummies.add(key)
    return typed, dummies


def _insert(tree: dict, path: list[str], kind: str) -> None:
    node = tree
    for tag in path[:-1]:
        entry = node.get(tag)
        if entry is None:
            return  # parents come before children in the source; a missing one: skip
        if isinstance(entry, str):
            entry = node[tag] = [entry, {}]
        node = entry[1]
    tag = path[-1]
    old = node.get(tag)
    old_kind = old if isinstance(old, str) else old[0] if old else None
    if old_kind is None or STRICTNESS[kind] < STRICTNESS[old_kind]:
        if isinstance(old, list):
            old[0] = kind
        else:
            node[tag] = kind


def _wanted(path: list[str], types: list[str], typed: set[str], dummies: set[str]) -> bool:
    """An attribute is kept if its tag is typed, if it leads to one, or if it is a required
    attribute below a dummy sequence (through required sequences only)."""
    for i, tag in enumerate(path[:-1]):
        if tag in dummies:
            below = types[i + 1:]
            return len(below) <= DUMMY_DEPTH and all(t in STRICTNESS and t != "3"
                                                    for t in below)
    return path[-1] in typed


def build(source: Path) -> dict:
    def load(name: str):
        return json.loads((source / name).read_text(encoding="utf-8"))

    typed, dummies = interesting()
    ciod_ids = {c["name"]: c["id"] for c in load("ciods.json")}
    sop_classes = {s["id"]: ciod_ids[s["ciod"]] for s in load("sops.json")
                   if s["ciod"] in ciod_ids}
    # every attribute row of a module or macro, by its id: [(path, type), ...]
    rows: dict[str, list[tuple[list[str], str]]] = {}
    for name, key in (("module_to_attributes.json", "moduleId"),
                      ("macro_to_attributes.json", "macroId")):
        for row in load(name):
            path = [part.upper() for part in row["path"].split(":")[1:]]
            rows.setdefault(row[key], []).append((path, row["type"]))
    # the Type of every prefix of a path, to judge the sequences an attribute sits in
    kinds: dict[str, dict[tuple[str, ...], str]] = {
        owner: {tuple(path): kind for path, kind in owned} for owner, owned in rows.items()}
    parts: dict[str, list[tuple[str, list[str]]]] = {}  # IOD -> [(owner, prefix)]
    for link in load("ciod_to_modules.json"):
        parts.setdefault(link["ciodId"], []).append((link["moduleId"], []))
    for link in load("ciod_to_fg_macros.json"):
        for group in FUNCTIONAL_GROUPS:
            parts.setdefault(link["ciodId"], []).append((link["macroId"], [group]))
    trees: list[dict] = []
    index: dict[str, int] = {}
    iods: dict[str, int] = {}
    for iod in sorted(parts):
        tree: dict = {}
        for owner, prefix in parts[iod]:
            own = kinds.get(owner, {})
            for path, kind in rows.get(owner, ()):
                if kind not in STRICTNESS:
                    continue  # "None": a retired or undefined row
                types = [own.get(tuple(path[:i + 1]), "3") for i in range(len(path))]
                if not _wanted(path, types, typed, dummies):
                    continue
                full = prefix + path
                for i in range(len(prefix), len(full) - 1):  # the sequences on the way
                    _insert(tree, full[:i + 1], types[i - len(prefix)]
                            if types[i - len(prefix)] in STRICTNESS else "3")
                _insert(tree, full, kind)
        text = json.dumps(tree, sort_keys=True)
        if text not in index:
            index[text] = len(trees)
            trees.append(tree)
        iods[iod] = index[text]
    sop_classes = {uid: iod for uid, iod in sop_classes.items() if iod in iods}
    digests = {name: hashlib.sha256((source / name).read_bytes()).hexdigest()[:16]
               for name in INPUTS}
    return {
        "source": f"innolitics/dicom-standard {metadata.version(PACKAGE)} (PyPI), "
                  "standard/*.json: DICOM PS3.3 (IODs, modules, macros) and PS3.4 (SOP "
                  "classes); generated by spe/anonymize/dicom/generate_iod_types.py",
        "inputs_sha256_16": digests,
        "sop_classes": dict(sorted(sop_classes.items())),
        "iods": iods,
        "trees": trees,
    }


def render(data: dict) -> str:
    """JSON with one line per SOP class, IOD and tree, so a diff shows what changed."""
    def line(value) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def block(items: list[str], open_: str, close: str) -> str:
        return open_ + "\n" + ",\n".join("  " + item for item in items) + "\n " + close

    out = ["{"]
    out.append(f' "source": {line(data["source"])},')
    out.append(f' "inputs_sha256_16": {line(data["inputs_sha256_16"])},')
    out.append(' "sop_classes": ' + block(
        [f"{line(k)}: {line(v)}" for k, v in data["sop_classes"].items()], "{", "},"))
    out.append(' "iods": ' + block(
        [f"{line(k)}: {line(v)}" for k, v in data["iods"].items()], "{", "},"))
    out.append(' "trees": ' + block([line(tree) for tree in data["trees"]], "[", "]"))
    out.append("}")
    return "\n".join(out) + "\n"


def main() -> None:
    TARGET.write_text(render(build(standard_dir())), encoding="utf-8")


if __name__ == "__main__":
    main()
