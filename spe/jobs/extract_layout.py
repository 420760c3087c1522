"""The layout of the extract a job sees at `/extract`, as a manifest and its JSON Schema.

`describe_extract(folder)` lists a staged extract as `{"layout", "entries": [{"path",
"kind", ...}]}`: the folders, each DICOM file (recognised by its Part 10 preamble, not its
name), each FHIR NDJSON file with the one resource type all its lines hold, and the staging
report with its top-level keys. Anything else (a staging marker, a partial file, a link)
is listed as kind "other", which the schema (`extract_layout.schema.json`) refuses: the
node's staging and `spe job test` must both give a job exactly the documented layout
(README, "What a job sees at /extract").
"""

from __future__ import annotations

import json
import os
import stat
from importlib import resources
from pathlib import Path
from typing import Any

LAYOUT = "spe-extract/1"
SCHEMA = "extract_layout.schema.json"
_DICOM_MAGIC_AT = 128  # PS3.10 7.1: a 128-byte preamble, then "DICM"


def schema() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(SCHEMA).read_text("utf-8"))


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_MAGIC_AT + 4)
    except OSError:
        return False
    return head[_DICOM_MAGIC_AT:] == b"DICM"


def _ndjson(path: Path) -> dict[str, Any] | None:
    """The one resource type of every line and how many lines; None if they differ, a
    line is not a JSON object, or the type is not the file's name."""
    kinds: set[str] = set()
    count = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                item = json.loads(line)
                if not isinstance(item, dict):
                    return None
                kinds.add(str(item.get("resourceType")))
                count += 1
    except (OSError, ValueError):
        return None
    name = path.name.removesuffix(".ndjson")
    if kinds - {name}:
        return None
    return {"resource_type": name, "resources": count}


def _report_keys(path: Path) -> list[str] | None:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return sorted(report) if isinstance(report, dict) else None


def _entry(root: Path, path: Path) -> dict[str, Any]:
    relative = path.relative_to(root).as_posix()
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        return {"path": relative, "kind": "folder"}
    if not stat.S_ISREG(mode):
        return {"path": relative, "kind": "other"}
    if relative == "report.json":
        keys = _report_keys(path)
        return {"path": relative, "kind": "staging-report", "keys": keys} \
            if keys is not None else {"path": relative, "kind": "other"}
    if relative.startswith("dicom/") and _is_dicom(path):
        return {"path": relative, "kind": "dicom"}
    if relative.startswith("fhir/") and relative.endswith(".ndjson"):
        found = _ndjson(path)
        if found is not None:
            return {"path": relative, "kind": "fhir-ndjson", **found}
    return {"path": relative, "kind": "other"}


def describe_extract(folder: Path | str) -> dict[str, Any]:
    """The manifest of the extract at `folder` (links listed, never followed)."""
    root = Path(folder)
    entries = []
    for here, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            entries.append(_entry(root, Path(here) / name))
    return {"layout": LAYOUT, "entries": sorted(entries, key=lambda e: e["path"])}


def layout_problems(manifest: dict[str, Any]) -> list[str]:
    """Where `manifest` departs from the schema, one line each (empty: it conforms).
    Needs `jsonschema` (a test dependency)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message[:200]}"
            for e in sorted(validator.iter_errors(manifest), key=lambda e: str(list(e.path)))]


__all__ = ["LAYOUT", "describe_extract", "layout_problems", "schema"]
