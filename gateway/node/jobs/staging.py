"""Staging: a permit's extract, built at the node from its own stores (the jobs' first step).

`stage(permit, node=..., settings=..., policy=..., cache_dir=..., data_version=...)` asks
`policies/anonymization` which layers the permit needs, de-identifies the node's DICOM folder
and FHIR NDJSON with the permit's key into

    CACHE/<pid>/<data_version>/dicom/    (spe.anonymize.dicom.batch.deidentify_tree)
    CACHE/<pid>/<data_version>/fhir/     (spe.anonymize.fhir_batch.deidentify_ndjson)
    CACHE/<pid>/<data_version>/report.json

and measures the re-identification risk of what it wrote (`spe.anonymize.extract.load_records`,
the reading `spe risk` uses too, and `spe.anonymize.risk`).
The same key drives both de-identifiers, so a patient's images and records keep the same
pseudonym, UIDs and date shift.

The key:
- pseudonymised permit (the policy says `pseudonymised`): the permit's key, HKDF of the node
  secret and the permit id (`PermitKey.derive`), so pseudonyms are stable across stagings and
  sites of the same permit and the node can re-identify if the law requires it;
- anonymised permit: `PermitKey.derive` of a random one-off secret and the permit id, thrown
  away after staging. Pseudonyms, UIDs and date shifts stay consistent inside the extract,
  but nobody (the node included) can link them back to a patient or to another extract.

Risk (layer 3): measured over the staged files (one record per patient: from FHIR, and from
the DICOM headers for a patient no FHIR Patient names, as on a DICOM-only node) against the
policy's k_min and max_risk. When it does not hold, Datafly (`risk.reduce`) generalises age, sex,
region and rare codes and suppresses the patients still in too-small classes, and
`spe.anonymize.risk_apply.reduce_files` (as `spe risk --reduce`) writes that into the FHIR
and DICOM files (age as a band in a Patient extension instead of a birth date, a suppressed
patient's resources and images removed); the files are then measured again, and whoever
still sits in a too-small class (suppression can make a common code rare among those left)
is suppressed, until it holds. The report keeps the figures before and after and what was
generalised and removed. `policies/jobs` (`extract`, asked by the node's job runner,
gateway/node/jobs/runtime.py) decides whether a job may run over an extract that still
misses the threshold or could not be measured (no patients, unreadable FHIR, a birth date
or age that is no date).

The report the researcher reads names no input path: an excluded or failed DICOM file is
named by a keyed reference (`file-<pseudonym of its relative path>`); the operator's list
with the real relative paths is `CACHE/<pid>/<data_version>.operator.json`, outside the
extract.

Builds go into a temporary folder next to the target and are renamed into place, under an
fcntl lock per permit and version: a second caller waits and reuses the result (`cached`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from gateway.node.config import NodeConfig
from spe.anonymize.extract import load_records
from spe.errors import SPEError
from spe.policy.service import PolicyService
from spe.settings import Settings

POLICY = "anonymization/decision"
REPORT = "report.json"
FORMAT = 4  # bumped when the layout, the report or the measure changes: older caches are
#            rebuilt (4: year-month birth dates and DICOM ones cut to a year are aged)
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

Progress = Callable[[str, int, int], None]
"""Called with (step, done, total); steps are "dicom", "fhir", "risk"."""


class PermitLike(Protocol):
    pid: str
    status: str
    form: str
    start: date
    end: date


class StagingError(SPEError):
    """The extract cannot be staged; `detail` says why. 409 when the request cannot be met
    as things are (permit, policy, sources), 500 when the node failed while building."""

    status_code = 409
    error = "staging_refused"

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(detail)
        if status_code is not None:
            self.status_code = status_code
            self.error = "staging_failed" if status_code >= 500 else self.error


class RiskRefused(StagingError):
    """policies/jobs `extract` refuses a job over the staged extract at its risk."""


@dataclass(frozen=True)
class StagedExtract:
    path: Path  # CACHE/<pid>/<data_version>, holding dicom/, fhir/ and report.json
    report: dict[str, Any]
    cached: bool


def permit_status(permit: PermitLike, today: date) -> str:
    """The status the anonymisation policy reads: "active" only for an issued permit
    inside its period."""
    if permit.status != "issued":
        return str(permit.status)
    if today < permit.start:
        return "not yet valid"
    if today > permit.end:
        return "expired"
    return "active"


def stage(permit: PermitLike, *, node: NodeConfig, settings: Settings, policy: PolicyService,
          cache_dir: Path, data_version: str, progress: Progress | None = None,
          workers: int = 1, today: date | None = None) -> StagedExtract:
    """Stage `permit`'s extract for `data_version` (see the module doc), or reuse it."""
    pid = str(permit.pid)
    for name, value in (("permit id", pid), ("data version", data_version)):
        if not _SEGMENT.fullmatch(value or ""):
            raise StagingError(f"{name} {value!r} cannot name a cache folder "
                               "(letters, digits, '.', '_', '-'; at most 64)")
    decision = _decide(permit, policy, today or date.today())
    dicom_src, fhir_src = _sources(node)
    # The data version counts syncs, not the node's configuration: an extract staged from
    # other sources is rebuilt (a digest, so the report still names no path).
    decision["sources"] = hashlib.sha256(
        f"{node.dicom or ''}\n{node.fhir or ''}".encode()).hexdigest()[:16]

    folder = Path(cache_dir) / pid
    target = folder / data_version
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / f".{data_version}.lock"):
        existing = _read_report(target)
        if existing is not None and _still_valid(existing, decision):
            return StagedExtract(target, existing, cached=True)
        tmp = folder / f".{data_version}.{secrets.token_hex(4)}.partial"
        try:
            report, operator = _build(permit, decision, settings, dicom_src, fhir_src, tmp,
                                      data_version, progress, workers)
            _write_json(tmp / REPORT, report)
            if target.exists():  # stale: another format or other layers; replaced
                old = folder / f".{data_version}.{secrets.token_hex(4)}.old"
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _write_json(folder / f"{data_version}.operator.json", operator)
    return StagedExtract(target, report, cached=False)


def _decide(permit: PermitLike, policy: PolicyService, today: date) -> dict[str, Any]:
    request = {"tier": "permit", "release": False, "permit": {
        "id": str(permit.pid), "status": permit_status(permit, today),
        "pseudonymised_justified": permit.form == "pseudonymised"}}
    decision = policy.decide(POLICY, request)
    if not decision.allow:
        raise StagingError(f"the anonymisation policy refused staging: {decision.reason}",
                           status_code=500 if decision.error else None)
    values = decision.values
    return {"reason": decision.reason, "layers": list(values.get("layers") or []),
            "pseudonymised": values.get("pseudonymised") is True,
            "k_min": values.get("k_min"), "max_risk": values.get("max_risk"),
            "max_suppression": _share(values.get("max_suppression")),
            "qi_weights": _weights(values.get("qi_weights"))}


def _share(value: Any) -> float:
    """The policy's suppression budget; anything unusable counts as none allowed (Datafly
    then generalises as far as it can before it suppresses anyone: the safe side)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
    return float(value) if ok else 0.0


def _weights(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0}


def _sources(node: NodeConfig) -> tuple[Path | None, Path | None]:
    dicom = fhir = None
    if node.dicom:
        kind, _, rest = node.dicom.partition(":")
        if kind != "folder":
            raise StagingError(f"DICOM source {kind!r} cannot be staged yet: only a folder: "
                               "source can (dimse:// and dicomweb: come later)")
        dicom = Path(rest)
    if node.fhir:
        kind, _, rest = node.fhir.partition(":")
        if kind != "ndjson":
            raise StagingError(f"FHIR source {kind!r} cannot be staged yet: only an ndjson: "
                               "folder can (bundle: comes later)")
        fhir = Path(rest)
    if dicom is None and fhir is None:
        raise StagingError("this node has no DICOM or FHIR source to stage from")
    for label, path in (("DICOM", dicom), ("FHIR", fhir)):
        if path is not None and not path.is_dir():
            raise StagingError(f"the node's {label} source is not a folder")
    return dicom, fhir


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_report(target: Path) -> dict[str, Any] | None:
    try:
        report = json.loads((target / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _still_valid(report: dict[str, Any], decision: dict[str, Any]) -> bool:
    return (report.get("format") == FORMAT
            and report.get("sources") == decision["sources"]
            and report.get("layers") == decision["layers"]
            and report.get("pseudonymised") == decision["pseudonymised"]
            and report.get("risk", {}).get("k_min") == decision["k_min"]
            and report.get("risk", {}).get("max_risk_allowed") == decision["max_risk"]
            and report.get("risk", {}).get("max_suppression") == decision["max_suppression"]
            and report.get("risk", {}).get("qi_weights") == decision["qi_weights"])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _build(permit: PermitLike, decision: dict[str, Any], settings: Settings,
           dicom_src: Path | None, fhir_src: Path | None, out: Path, data_version: str,
           progress: Progress | None, workers: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from spe.anonymize.dicom.batch import BatchError, deidentify_tree
    from spe.anonymize.fhir_batch import NdjsonError, deidentify_ndjson
    from spe.anonymize.pseudonyms import PermitKey

    started = time.perf_counter()
    pid = str(permit.pid)
    try:
        if decision["pseudonymised"]:
            key = PermitKey.derive(settings.secret_key.get_secret_value(), pid)
        else:  # anonymised: a one-off key nobody keeps
            key = PermitKey.derive(secrets.token_bytes(32), pid)
    except ValueError as exc:
        raise StagingError(f"no usable pseudonym key: {exc}", status_code=500) from None
    out.mkdir(parents=True)

    dicom: dict[str, Any] = {"source": dicom_src is not None, "files_in": 0, "files_out": 0,
                             "excluded": 0, "failed": 0, "seconds": 0.0}
    files: list[dict[str, str]] = []
    operator_files: list[dict[str, str]] = []
    if dicom_src is not None:
        try:
            result = deidentify_tree(
                dicom_src, out / "dicom", key, workers=workers,
                progress=(lambda done, total: progress("dicom", done, total))
                if progress else None)
        except BatchError as exc:
            raise StagingError(f"DICOM staging refused: {exc}") from None
        except (ImportError, OSError) as exc:
            raise StagingError(f"DICOM staging failed: {exc}", status_code=500) from None
        dicom.update(files_in=result.files, files_out=result.done,
                     excluded=len(result.excluded), failed=len(result.failed),
                     seconds=result.seconds)
        for outcome, items in (("excluded", result.excluded), ("failed", result.failed)):
            for item in items:
                ref = "file-" + key.pseudonym(item["file"], "staging-file", 16).lower()
                files.append({"file": ref, "outcome": outcome, "reason": item["reason"]})
                operator_files.append({**item, "ref": ref, "outcome": outcome})
    else:
        (out / "dicom").mkdir()

    fhir: dict[str, Any] = {"source": fhir_src is not None, "resources_in": 0,
                            "resources_out": 0, "types": {}, "skipped_lines": 0,
                            "seconds": 0.0}
    skipped: list[dict[str, Any]] = []
    if fhir_src is not None:
        if progress:
            progress("fhir", 0, 1)
        try:
            result_f = deidentify_ndjson(fhir_src, out / "fhir", key, workers=workers)
        except NdjsonError as exc:
            raise StagingError(f"FHIR staging refused: {exc}") from None
        except OSError as exc:
            raise StagingError(f"FHIR staging failed: {exc.strerror or exc}",
                               status_code=500) from None
        fhir.update(resources_in=result_f.resources_in, resources_out=result_f.resources_out,
                    types=result_f.types, skipped_lines=len(result_f.skipped),
                    seconds=result_f.seconds)
        # File names are resource types and line numbers say nothing of a patient; a
        # reason may quote the resource, so only its first words are kept.
        skipped = [{"file": s["file"], "line": s["line"], "reason": str(s["reason"])[:80]}
                   for s in result_f.skipped]
        if progress:
            progress("fhir", 1, 1)
    else:
        (out / "fhir").mkdir()

    if progress:
        progress("risk", 0, 1)
    risk = _risk(out / "fhir", out / "dicom", decision)
    if progress:
        progress("risk", 1, 1)

    report = {
        "format": FORMAT,
        "pid": pid,
        "data_version": data_version,
        "form": permit.form,
        "policy": decision["reason"],
        "layers": decision["layers"],
        "sources": decision["sources"],
        "pseudonymised": decision["pseudonymised"],
        "key": "permit" if decision["pseudonymised"] else "one-off (discarded)",
        "counts": {"dicom": dicom, "fhir": fhir},
        "excluded_files": files,
        "skipped_fhir_lines": skipped,
        "risk": risk,
        "risk_ok": risk["ok"],
        "staged_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
    }
    operator = {"pid": pid, "data_version": data_version, "files": operator_files,
                "skipped_fhir_lines": [dict(s) for s in (result_f.skipped if fhir_src else [])]}
    return report, operator


def _risk(fhir_dir: Path, dicom_dir: Path, decision: dict[str, Any]) -> dict[str, Any]:
    """Measure the staged extract's re-identification risk and, when it is above the
    policy's threshold, generalise and suppress (Datafly, `risk.reduce`) and write that
    into the files (`risk_apply`), then measure the files again."""
    from spe.anonymize.extract import ExtractError
    from spe.anonymize.risk import k_for, measure
    from spe.anonymize.risk_apply import reduce_files

    k_min, max_risk = decision["k_min"], decision["max_risk"]
    base: dict[str, Any] = {"k_min": k_min, "max_risk_allowed": max_risk,
                            "max_suppression": decision["max_suppression"],
                            "qi_weights": decision["qi_weights"]}
    if "risk" not in decision["layers"]:
        return {**base, "measured": False, "ok": True,
                "reason": "the policy does not ask for the risk layer"}
    try:
        records = load_records(fhir_dir, dicom_dir)
    except ExtractError as exc:
        return {**base, "measured": False, "ok": False, "reason": str(exc)}
    if not records:
        return {**base, "measured": False, "ok": False, "reason": "no patients staged"}
    k_wanted = k_for(k_min, max_risk)
    threshold = max_risk if max_risk is not None else 1 / k_wanted

    def figures(records: list[dict[str, Any]]) -> dict[str, Any]:
        measured = measure(records, threshold=threshold)
        return {"ok": measured.k >= k_wanted and measured.max_risk <= threshold + 1e-9,
                "records": measured.records, "k": measured.k,
                "max_risk": round(measured.max_risk, 4),
                "average_risk": round(measured.average_risk, 4),
                "at_risk": measured.at_risk, "classes": measured.classes,
                "qis": measured.qis}

    before = figures(records)
    out = {**base, "measured": True, "k_wanted": k_wanted, "threshold": threshold, **before,
           "before": None, "reduction": None}
    if before["ok"]:
        return out
    done = reduce_files(fhir_dir, dicom_dir, records, k_min=k_min, max_risk=max_risk,
                        max_suppression=decision["max_suppression"],
                        weights=decision["qi_weights"])
    if done.records is not None:
        out.update(figures(done.records))
    else:
        out.update(ok=False, reason=f"the generalised extract could not be measured: "
                                    f"{done.error}")
    out["before"] = before
    out["reduction"] = {"applied": True, "levels": done.planned.levels,
                        "suppressed": done.planned.suppressed, **done.applied.to_dict(),
                        "suppression_rounds": done.rounds,
                        "steps": [s.to_dict() for s in done.steps]}
    return out


#: The measured records of a staged extract: the one reading `spe risk` uses too.
staged_records = load_records
