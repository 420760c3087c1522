"""De-identify a FHIR Bulk Data export (a folder of NDJSON files) into another folder.

`deidentify_ndjson(src, dst, key, rules)` reads every `*.ndjson` file directly in SRC (the
Bulk Data layout: one file per resource type, one resource per line), de-identifies the
resources with `fhir.FhirDeidentifier` and writes DST/<same name> with one resource per line.

All files are loaded before any resource is de-identified: the de-identifier must know every
Patient (their MRN decides everyone's date shift) and every resource id (for references)
first. A line that is not JSON, not a JSON object, or has no resourceType is skipped and
reported with its file and line number (from 1); so is a resource the rules cannot process.
Blank lines are ignored. A resource the rules remove as a whole is counted, not written.

Each output file is written to a hidden temporary (".<name>.partial") in DST and renamed
over its final name when complete, so no half-written file is ever left.

With `workers` > 1 the resources are de-identified by that many processes, in batches, each
with a copy of the de-identifier that already knows every Patient and id; the output is the
same as with one. A batch whose process dies is reported as skipped lines, never lost.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spe.anonymize.fhir import FhirDeidentifier, RuleSet
from spe.anonymize.processes import pool_context
from spe.anonymize.pseudonyms import PermitKey


class NdjsonError(ValueError):
    """The arguments of a run are unusable (SRC missing, DST inside SRC, bad rules)."""


@dataclass
class NdjsonReport:
    src: str
    dst: str
    files: list[str] = field(default_factory=list)  # input file names, written to DST
    # resource type -> in (resources read), out (written), removed (by the rules as a whole),
    # skipped (the rules failed on it); lines that are no resource are only in `skipped`.
    types: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # file, line, reason
    seconds: float = 0.0

    @property
    def resources_in(self) -> int:
        return sum(t["in"] for t in self.types.values())

    @property
    def resources_out(self) -> int:
        return sum(t["out"] for t in self.types.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "files": self.files,
            "resources_in": self.resources_in,
            "resources_out": self.resources_out,
            "types": self.types,
            "skipped": len(self.skipped),
            "skipped_lines": self.skipped,
            "seconds": self.seconds,
        }


@dataclass
class _Line:
    number: int
    resource: dict[str, Any]


def _check_paths(src: Path, dst: Path) -> None:
    if not src.exists():
        raise NdjsonError(f"source folder {src} does not exist")
    if not src.is_dir():
        raise NdjsonError(f"source {src} is not a folder")
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src:
        raise NdjsonError("the destination folder must not be the source folder")
    if real_src in real_dst.parents:
        raise NdjsonError(f"the destination {dst} is inside the source folder {src}")
    if dst.exists() and not dst.is_dir():
        raise NdjsonError(f"destination {dst} exists and is not a folder")


def _load(path: Path, report: NdjsonReport) -> list[_Line]:
    lines: list[_Line] = []
    with open(path, "rb") as fp:
        for number, raw in enumerate(fp, 1):
            if not raw.strip():
                continue
            reason = None
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                reason = "not UTF-8"
            except json.JSONDecodeError as exc:
                reason = f"not JSON: {exc.msg} at column {exc.colno}"
            else:
                if not isinstance(value, dict):
                    reason = f"not a JSON object but {type(value).__name__}"
                elif not isinstance(value.get("resourceType"), str):
                    reason = "no resourceType: not a FHIR resource"
            if reason is None:
                lines.append(_Line(number, value))
            else:
                report.skipped.append({"file": path.name, "line": number, "reason": reason})
    return lines


def _write(path: Path, resources: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as out:
            for resource in resources:
                out.write(json.dumps(resource, ensure_ascii=False, separators=(",", ":")))
                out.write("\n")
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


BATCH = 500  # resources per task of a process pool

# What became of one resource: (the de-identified resource, or None when the rules removed
# it or failed on it; the reason it failed, or None).
Outcome = tuple[dict[str, Any] | None, str | None]


def _one(deidentifier: FhirDeidentifier, resource: dict[str, Any]) -> Outcome:
    try:
        return deidentifier.deidentify(resource), None
    except Exception as exc:  # rules evaluated on untrusted input
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return None, message or type(exc).__name__


_DEIDENTIFIER: FhirDeidentifier | None = None


def _init_worker(deidentifier: FhirDeidentifier) -> None:
    global _DEIDENTIFIER
    _DEIDENTIFIER = deidentifier


def _run_batch(resources: list[dict[str, Any]]) -> list[Outcome]:
    assert _DEIDENTIFIER is not None, "worker not initialised"
    return [_one(_DEIDENTIFIER, r) for r in resources]


def _deidentify_all(deidentifier: FhirDeidentifier, resources: list[dict[str, Any]],
                    workers: int) -> list[Outcome]:
    """Every resource's outcome, in order."""
    batches = [resources[i:i + BATCH] for i in range(0, len(resources), BATCH)]
    workers = min(workers, len(batches))
    if workers <= 1:
        return [_one(deidentifier, r) for r in resources]
    outcomes: list[Outcome] = []
    with ProcessPoolExecutor(workers, mp_context=pool_context(),
                             initializer=_init_worker, initargs=(deidentifier,)) as pool:
        futures = [pool.submit(_run_batch, batch) for batch in batches]
        for batch, future in zip(batches, futures, strict=True):
            try:
                outcomes += future.result()
            except Exception as exc:  # the process died (killed, out of memory)
                reason = f"worker process failed: {type(exc).__name__}: {exc}"[:200]
                outcomes += [(None, reason)] * len(batch)
    return outcomes


def deidentify_ndjson(src: str | os.PathLike[str], dst: str | os.PathLike[str], key: PermitKey,
                      rules: RuleSet | str | os.PathLike[str] | dict[str, Any] | None = None,
                      *, workers: int | None = 1) -> NdjsonReport:
    """De-identify every `*.ndjson` in `src` into `dst` (see the module doc), in `workers`
    processes (1: in this one; None: one per core).

    Raises `NdjsonError` for unusable folders or rules (and OSError when a file cannot be read
    or written); bad lines are reported, not raised.
    """
    src_path, dst_path = Path(src), Path(dst)
    _check_paths(src_path, dst_path)
    try:
        deidentifier = FhirDeidentifier(rules, key)
    except FileNotFoundError:
        raise NdjsonError(f"FHIR rule file not found: {rules}") from None
    except ValueError as exc:
        raise NdjsonError(str(exc)) from None
    started = time.perf_counter()
    report = NdjsonReport(str(src_path), str(dst_path))
    names = sorted(p.name for p in src_path.iterdir()
                   if p.suffix == ".ndjson" and p.is_file() and not p.name.startswith("."))
    loaded = {name: _load(src_path / name, report) for name in names}
    report.files = names

    # Patients first: their MRNs decide every date shift, their ids every reference.
    everything = [line.resource for lines in loaded.values() for line in lines]
    deidentifier.register(sorted(everything, key=lambda r: r["resourceType"] != "Patient"))

    dst_path.mkdir(parents=True, exist_ok=True)
    workers = max(1, workers or os.cpu_count() or 1)
    outcomes = iter(_deidentify_all(deidentifier, everything, workers))
    for name, lines in loaded.items():
        out: list[dict[str, Any]] = []
        for line in lines:
            kind = line.resource["resourceType"]
            counts = report.types.setdefault(
                kind, {"in": 0, "out": 0, "removed": 0, "skipped": 0})
            counts["in"] += 1
            result, error = next(outcomes)
            if error is not None:
                report.skipped.append({"file": name, "line": line.number, "reason": error})
                counts["skipped"] += 1
                continue
            if result is None:
                counts["removed"] += 1
            else:
                counts["out"] += 1
                out.append(result)
        _write(dst_path / name, out)
    report.skipped.sort(key=lambda s: (s["file"], s["line"]))
    report.seconds = round(time.perf_counter() - started, 3)
    return report
