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

DICOM sources: a folder's files (`deidentify_tree`, on `workers` processes); a PACS over
DIMSE (`dimse://`, C-GET or C-MOVE) or DICOMweb (`dicomweb:`, WADO-RS): the `studies` of the
node's index, retrieved and de-identified in memory study by study
(gateway/node/jobs/staging_remote.py), into the same layout.

Builds go into `CACHE/<pid>/.<data_version>.partial` and are renamed into place, under an
fcntl lock per permit and version: a second caller waits and reuses the result (`cached`).
A PACS build under the permit's key is resumable: after a kill or a failure its partial
build stays, and the next attempt under the same decision keeps the studies it finished
(until the risk step, which rewrites files in place). Any other partial build is removed
(on failure, or by the next attempt); an anonymised permit's never outlives its one-off key.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from gateway.node.config import NodeConfig, SourceSpecError, open_dicom_source, source_identity
from gateway.node.jobs.staging_errors import StagingError
from gateway.node.jobs.staging_remote import (
    MARKERS,
    WORK,
    RemoteDicom,
    retrieval_name,
    stage_studies,
)
from gateway.node.sources.base import SourceError, StudyRecord
from spe.anonymize.extract import load_records
from spe.anonymize.risk_apply import HeldDicom
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


@dataclass(frozen=True)
class StagedExtract:
    path: Path  # CACHE/<pid>/<data_version>, holding dicom/, fhir/ and report.json
    report: dict[str, Any]
    cached: bool


#: The most processes a staging uses when SPE_STAGING_WORKERS is 0 (one per core): past
#: this the disk, not the cores, bounds a folder's staging, and each holds datasets.
MAX_AUTO_WORKERS = 8


def staging_workers(setting: int) -> int:
    """The processes a staging uses for SPE_STAGING_WORKERS=`setting` (0: one per core
    this process may run on, at most `MAX_AUTO_WORKERS`)."""
    if setting > 0:
        return setting
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_AUTO_WORKERS, cores))


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
          workers: int = 1, today: date | None = None,
          studies: Sequence[str] | None = None) -> StagedExtract:
    """Stage `permit`'s extract for `data_version` (see the module doc), or reuse it.

    `studies`: the Study Instance UIDs to retrieve from a PACS source (the node's index at
    `data_version`); None lists them from the source. A folder source stages its files.
    `workers`: processes, as SPE_STAGING_WORKERS (0: `staging_workers`' default)."""
    workers = staging_workers(workers)
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
        f"{source_identity(node.dicom or '')}\n{node.fhir or ''}".encode()).hexdigest()[:16]

    folder = Path(cache_dir) / pid
    target = folder / data_version
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / f".{data_version}.lock"):
        existing = _read_report(target)
        if existing is not None and _still_valid(existing, decision):
            return StagedExtract(target, existing, cached=True)
        # One partial build per version (the lock above makes it this caller's). A PACS
        # staging under the permit's key resumes from it after a kill or a failure; any
        # other partial build is thrown away (an anonymised permit's key died with it).
        tmp = folder / f".{data_version}.partial"
        resumable = decision["pseudonymised"] and not isinstance(dicom_src, Path) \
            and dicom_src is not None
        _prepare_partial(tmp, _fingerprint(decision, settings) if resumable else None)
        finished = False
        try:
            if dicom_src is not None and not isinstance(dicom_src, Path) and studies is None:
                studies = _list_studies(dicom_src)
            report, operator = _build(permit, decision, settings, dicom_src, fhir_src, tmp,
                                      data_version, progress, workers, studies or [])
            _write_json(tmp / REPORT, report)
            for name in RESUME_FILES:
                path = tmp / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            if target.exists():  # stale: another format or other layers; replaced
                old = folder / f".{data_version}.{secrets.token_hex(4)}.old"
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
            finished = True
            _drop_stale_partials(folder, data_version)
        finally:
            if not finished and not resumable:
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


def _sources(node: NodeConfig) -> tuple[Path | RemoteDicom | None, Path | None]:
    dicom: Path | RemoteDicom | None = None
    fhir = None
    if node.dicom:
        kind, _, rest = node.dicom.partition(":")
        if kind == "folder":
            dicom = Path(rest)
        elif kind in ("dimse", "dicomweb"):
            try:
                dicom = open_dicom_source(node.dicom)  # type: ignore[assignment]
            except SourceSpecError as exc:
                raise StagingError(f"the node's DICOM source: {exc}") from None
        else:
            raise StagingError(f"DICOM source {kind!r} cannot be staged: use folder:, "
                               "dimse:// or dicomweb:")
    if node.fhir:
        kind, _, rest = node.fhir.partition(":")
        if kind != "ndjson":
            raise StagingError(f"FHIR source {kind!r} cannot be staged yet: only an ndjson: "
                               "folder can (bundle: comes later)")
        fhir = Path(rest)
    if dicom is None and fhir is None:
        raise StagingError("this node has no DICOM or FHIR source to stage from")
    for label, path in (("DICOM", dicom), ("FHIR", fhir)):
        if isinstance(path, Path) and not path.is_dir():
            raise StagingError(f"the node's {label} source is not a folder")
    return dicom, fhir


RESUME_FILES = (".resume.json", ".risk", MARKERS, WORK)


def _fingerprint(decision: dict[str, Any], settings: Settings) -> str:
    """What a partial build was made under: it is resumed only under the same decision and
    the same node secret (the permit key's; a digest of it, which does not give it back)."""
    secret = hashlib.sha256(b"spe-staging-resume\0"
                            + settings.secret_key.get_secret_value().encode()).hexdigest()
    return hashlib.sha256(json.dumps({"format": FORMAT, "secret": secret, **decision},
                                     sort_keys=True, default=str).encode()).hexdigest()


def _prepare_partial(tmp: Path, fingerprint: str | None) -> None:
    """Keep an earlier attempt's partial build only when it can be resumed: made under the
    same decision and key, and not yet into its risk step (which rewrites files in place)."""
    if tmp.exists():
        try:
            kept = json.loads((tmp / ".resume.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            kept = None
        if (fingerprint is None or (tmp / ".risk").exists()
                or kept != {"fingerprint": fingerprint}):
            shutil.rmtree(tmp)
    tmp.mkdir(exist_ok=True)
    if fingerprint is not None:
        _write_json(tmp / ".resume.json", {"fingerprint": fingerprint})


def _drop_stale_partials(folder: Path, current: str) -> None:
    """Partial builds of other versions that nobody is building (their lock is free): an
    older sync's, left by a failed PACS staging for a resume that will not come."""
    for path in folder.glob(".*.partial"):
        version = path.name[1:-len(".partial")]
        if version == current or not path.is_dir():
            continue
        with open(folder / f".{version}.lock", "a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # being built right now
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _list_studies(source: RemoteDicom) -> list[str]:
    try:
        return sorted({r.study_uid for r in source.studies()  # type: ignore[attr-defined]
                       if isinstance(r, StudyRecord)})
    except SourceError as exc:
        raise StagingError(f"DICOM staging: cannot list the studies at the PACS: "
                           f"{exc}") from None


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
           dicom_src: Path | RemoteDicom | None, fhir_src: Path | None, out: Path,
           data_version: str, progress: Progress | None, workers: int,
           studies: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    # A folder's DICOM tree is held by worker processes until layer 3 is written into it;
    # they end with the build, however it ends.
    with ExitStack() as cleanup:
        return _build_in(permit, decision, settings, dicom_src, fhir_src, out, data_version,
                         progress, workers, studies, cleanup)


def _build_in(permit: PermitLike, decision: dict[str, Any], settings: Settings,
              dicom_src: Path | RemoteDicom | None, fhir_src: Path | None, out: Path,
              data_version: str, progress: Progress | None, workers: int,
              studies: Sequence[str], cleanup: ExitStack,
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    from gateway.node.jobs.staging_once import BatchError, HeldTree, hold_tree
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
    out.mkdir(parents=True, exist_ok=True)
    held: HeldTree | None = None

    dicom: dict[str, Any] = {"source": dicom_src is not None, "files_in": 0, "files_out": 0,
                             "excluded": 0, "failed": 0, "seconds": 0.0}
    files: list[dict[str, str]] = []
    operator_files: list[dict[str, str]] = []
    if dicom_src is not None and not isinstance(dicom_src, Path):
        result, resumed = stage_studies(dicom_src, studies, key, out, progress)
        dicom.update(files_in=result.files, files_out=result.done,
                     excluded=len(result.excluded), failed=len(result.failed),
                     seconds=result.seconds,
                     retrieval={"by": retrieval_name(dicom_src), "studies": len(studies),
                                "studies_resumed": resumed})
        for outcome, items in (("excluded", result.excluded), ("failed", result.failed)):
            for item in items:
                ref = "file-" + key.pseudonym(item["file"], "staging-file", 16).lower()
                files.append({"file": ref, "outcome": outcome, "reason": item["reason"]})
                operator_files.append({**item, "ref": ref, "outcome": outcome})
    elif dicom_src is not None:
        try:
            # Read once, written once after layer 3 (staging_once.py); same files as
            # deidentify_tree followed by risk_apply's rewrite.
            result = held = hold_tree(
                dicom_src, out / "dicom", key, workers=workers,
                progress=(lambda done, total: progress("dicom", done, total))
                if progress else None)
            cleanup.callback(held.close)
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
    shutil.rmtree(out / "fhir", ignore_errors=True)  # an interrupted attempt's
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
    (out / ".risk").touch()  # from here the files change in place: no resuming
    risk = _risk(out / "fhir", out / "dicom", decision, held)
    if held is not None:
        try:
            held.write()
        except OSError as exc:
            raise StagingError(f"DICOM staging failed: {exc}", status_code=500) from None
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


def _risk(fhir_dir: Path, dicom_dir: Path, decision: dict[str, Any],
          held: HeldDicom | None = None) -> dict[str, Any]:
    """Measure the staged extract's re-identification risk and, when it is above the
    policy's threshold, generalise and suppress (Datafly, `risk.reduce`) and write that
    into the files (`risk_apply`), then measure the files again. `held`: the DICOM tree
    still in memory (staging_once.py), measured and changed there, as if written."""
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
        records = load_records(fhir_dir, dicom_dir,
                               dicom=held.records if held is not None else None)
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
                        weights=decision["qi_weights"], dicom=held)
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
