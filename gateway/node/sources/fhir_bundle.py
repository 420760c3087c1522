"""FHIR Bundles in JSON files, as Synthea writes them, as a `FhirSource`.

Synthea writes one `transaction` Bundle per patient (`fhir/<name>_<id>.json`, plus Bundles
of hospitals and practitioners); other exporters write `collection`, `batch`, `searchset`
or `document` Bundles. Every `entry[].resource` is validated on its own (see
`fhir_validate`): a bad entry is skipped, the rest of the Bundle is read. A file that is not
JSON, or not a Bundle nor a single resource, is one `Skipped`.

Bundles may repeat a resource: Synthea's `--locale es` export writes one `document` Bundle per
patient and document kind, and each carries the Patient and many of the same Encounters,
Conditions and Observations. A resource is yielded once per (resourceType, id), the first
valid occurrence in file and entry order; later copies are dropped silently (they are not
errors, so not `Skipped`) and counted in `FhirBundleSource.duplicates`. A resource without an
id cannot be matched and is always yielded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.node.sources.base import FhirItem, Progress, Skipped
from gateway.node.sources.fhir_ndjson import fhir_files, parse_error
from gateway.node.sources.fhir_validate import InvalidResource, validate


def _key(data: Any) -> tuple[str, str] | None:
    """(resourceType, id) of a resource that has both as strings, else None."""
    if not isinstance(data, dict):
        return None
    resource_type, resource_id = data.get("resourceType"), data.get("id")
    if isinstance(resource_type, str) and isinstance(resource_id, str) and resource_id:
        return resource_type, resource_id
    return None


def _item(data: Any, where: str) -> FhirItem | Skipped:
    try:
        resource_type = validate(data)
    except InvalidResource as exc:
        return Skipped(where, str(exc))
    return FhirItem(resource_type, data, where)


class FhirBundleSource:
    """Resources from the Bundles in the `*.json` files of a folder (any depth)."""

    def __init__(self, folder: Path | str, name: str = "bundle") -> None:
        self.folder = Path(folder)
        self.name = name
        self.duplicates = 0  # resources dropped as repeats by the last `resources()` walk

    def __repr__(self) -> str:
        return f"FhirBundleSource({str(self.folder)!r}, name={self.name!r})"

    def resources(self, progress: Progress | None = None) -> Iterator[FhirItem | Skipped]:
        """Every entry's resource, file by file, in file and entry order.

        `where` is `<file>:entry[<i>]` for an entry, `<file>` for a whole file. A resource
        whose (resourceType, id) was already yielded is dropped and counted in
        `self.duplicates`; `progress` still counts it as read.
        """
        self.duplicates = 0
        seen: set[tuple[str, str]] = set()

        def once(data: Any, where: str) -> FhirItem | Skipped | None:
            key = _key(data)
            if key is not None and key in seen:
                self.duplicates += 1
                return None
            item = _item(data, where)
            if key is not None and isinstance(item, FhirItem):
                seen.add(key)  # an invalid copy does not hide a later valid one
            return item

        for path in fhir_files(self.folder, "*.json"):
            rel = path.relative_to(self.folder).as_posix()
            try:
                data = json.loads(path.read_bytes())
            except OSError as exc:
                yield Skipped(rel, f"unreadable: {exc.strerror or exc}")
                continue
            except ValueError as exc:
                yield Skipped(rel, parse_error(exc))
                continue
            if not isinstance(data, dict) or "resourceType" not in data:
                yield Skipped(rel, "not a FHIR resource (no resourceType)")
                continue
            if data.get("resourceType") != "Bundle":
                if progress:
                    progress(1)
                item = once(data, rel)  # a file with one resource
                if item is not None:
                    yield item
                continue
            entries = data.get("entry", [])
            if not isinstance(entries, list):
                yield Skipped(rel, "Bundle.entry is not a list")
                continue
            for index, entry in enumerate(entries):
                where = f"{rel}:entry[{index}]"
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if progress:
                    progress(1)
                if resource is None:
                    yield Skipped(where, "entry without a resource")
                elif (item := once(resource, where)) is not None:
                    yield item
