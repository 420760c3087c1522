"""Staging from a PACS: a permit's studies retrieved over DIMSE or DICOMweb, de-identified
in memory as they arrive, study by study, resumable.

`stage_studies(source, studies, key, out, progress)` asks the source for each study's
instances (C-FIND / QIDO-RS; a study the PACS no longer has is a `StagingError` before
anything is retrieved), then retrieves one study at a time (`source.stream`: C-GET or
C-MOVE, sources/dimse_retrieve.py; WADO-RS, sources/dicomweb.py). Each instance goes from
the network to `spe.anonymize.dicom.batch.InstanceDeidentifier` in memory; only the
de-identified output is written, named as a folder's would be
(`dicom/<new study>/<new series>/<new SOP instance>.dcm`), so the extract is the one a
folder of the same files gives.

Resumable: a study is written into `OUT/.work/<ref>/` (0700) and moved into `OUT/dicom/`
when all of it came, then marked done in `OUT/.studies/<ref>.json` with its outcomes (ref:
a digest of the Study Instance UID). A staging killed mid-way keeps its partial folder;
the next attempt (same permit key, same decision, see staging.py) skips the marked
studies and starts the interrupted one again. Progress is reported per instance as
("dicom", done, total), the marked studies counted as done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.node.jobs.staging_errors import StagingError
from gateway.node.sources.base import SourceError
from spe.anonymize.dicom.batch import BatchReport, InstanceDeidentifier

MARKERS = ".studies"
WORK = ".work"


class RemoteDicom(Protocol):
    name: str

    def instances(self, study_uid: str) -> dict[str, str] | None: ...

    def stream(self, study_uid: str, sink: Callable[[Any, str], None],
               instances: dict[str, str]) -> int: ...


def ref_of(study_uid: str) -> str:
    return hashlib.sha256(study_uid.encode()).hexdigest()[:24]


def retrieval_name(source: Any) -> str:
    """How the source retrieved, for the report: WADO-RS, C-GET or C-MOVE (a DIMSE source
    that retrieved nothing this time: its mode)."""
    mode = getattr(source, "retrieve_mode", None)
    if mode is None:
        return "WADO-RS"
    return getattr(source, "retrieved_by", None) or f"{mode} (nothing retrieved)"


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), int) else None


def _merge(work: Path, dicom: Path) -> None:
    """Move a finished study's output into the extract. A file already there (the same
    study redone after a kill between this and its marker) is the same bytes: same key,
    same input."""
    for path in sorted(work.rglob("*.dcm")):
        target = dicom / path.relative_to(work)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def stage_studies(source: RemoteDicom, studies: Sequence[str], key: Any, out: Path,
                  progress: Callable[[str, int, int], None] | None = None,
                  ) -> tuple[BatchReport, int]:
    """De-identify `studies` from `source` into `out/dicom` (see the module doc); the
    outcomes as a `BatchReport` (files: instances received) and how many studies an
    earlier attempt had finished. Raises `StagingError`."""
    started = time.perf_counter()
    dicom, markers, work_root = out / "dicom", out / MARKERS, out / WORK
    for folder in (dicom, markers, work_root):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    deidentifier = InstanceDeidentifier(key)

    plan: list[tuple[str, str, dict[str, str] | None, dict[str, Any] | None]] = []
    for uid in studies:
        ref = ref_of(uid)
        marker = _read_marker(markers / f"{ref}.json")
        if marker is not None:
            plan.append((uid, ref, None, marker))
            continue
        try:
            instances = source.instances(uid)
        except SourceError as exc:
            raise StagingError(f"DICOM staging: cannot list study {uid} at the PACS: "
                               f"{exc}") from None
        if instances is None:
            raise StagingError(f"DICOM staging: study {uid} of the node's index is no longer "
                               f"at the PACS ({source.name}); sync the node again")
        plan.append((uid, ref, instances, None))

    total = sum(len(i) if i is not None else (m or {}).get("files", 0) for _, _, i, m in plan)
    done = sum(m["files"] for _, _, _, m in plan if m is not None)
    report = BatchReport(source.name, str(dicom))
    resumed = 0
    if progress:
        progress("dicom", done, total)
    lock = threading.Lock()

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress("dicom", min(done, total), total)

    try:
        for uid, ref, instances, marker in plan:
            if marker is None:
                assert instances is not None
                marker = _one_study(source, uid, ref, instances, deidentifier, work_root,
                                    dicom, markers, lock, step)
            else:
                resumed += 1
            report.files += marker["files"]
            report.done += marker["done"]
            report.excluded.extend(marker["excluded"])
            report.failed.extend(marker["failed"])
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()  # a C-MOVE's Storage SCP

    report.excluded.sort(key=lambda item: item["file"])
    report.failed.sort(key=lambda item: item["file"])
    report.seconds = round(time.perf_counter() - started, 3)
    shutil.rmtree(work_root, ignore_errors=True)
    return report, resumed


def _one_study(source: RemoteDicom, uid: str, ref: str, instances: dict[str, str],
               deidentifier: InstanceDeidentifier, work_root: Path, dicom: Path,
               markers: Path, lock: threading.Lock,
               step: Callable[[], None]) -> dict[str, Any]:
    work = work_root / ref
    shutil.rmtree(work, ignore_errors=True)  # an interrupted attempt's half study
    work.mkdir(mode=0o700)
    outcomes: list[tuple[str, str, str]] = []

    def sink(data: Any, sop_uid: str) -> None:
        # Called from the association's thread (C-GET, C-MOVE) or this one (WADO-RS).
        with lock:
            status, reason, _output = deidentifier.apply(data, work, f"{uid}/{sop_uid}")
            outcomes.append((f"{uid}/{sop_uid}", status, reason))
            step()

    try:
        source.stream(uid, sink, instances)
    except SourceError as exc:
        raise StagingError(f"DICOM staging: {exc}") from None
    received = {name.rpartition("/")[2] for name, _, _ in outcomes}
    missing = set(instances) - received
    if missing:
        raise StagingError(f"DICOM staging: study {uid} came incomplete from {source.name}: "
                           f"{len(missing)} of {len(instances)} instances missing")
    try:
        _merge(work, dicom)
    except OSError as exc:
        raise StagingError(f"DICOM staging failed writing study output: "
                           f"{exc.strerror or exc}", status_code=500) from None
    marker = {"study": ref, "files": len(outcomes),
              "done": sum(1 for _, s, _ in outcomes if s == "done"),
              "excluded": [{"file": n, "reason": r} for n, s, r in outcomes if s == "excluded"],
              "failed": [{"file": n, "reason": r} for n, s, r in outcomes if s == "failed"]}
    tmp = markers / f".{ref}.json.partial"
    tmp.write_text(json.dumps(marker), encoding="utf-8")
    os.replace(tmp, markers / f"{ref}.json")
    shutil.rmtree(work, ignore_errors=True)
    return marker
