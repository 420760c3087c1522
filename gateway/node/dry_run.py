"""A job tried on dummy data, on the researcher's own machine, exactly as a node runs it
(`spe job test`; the node's side of it: no hub, no network, no real data).

For each institution of the permit, shaped like its catalogue descriptor
(`spe.synth.shaped`): synthetic FHIR and DICOM are written, indexed by the node's own sync
(`gateway.node.service.run_sync`) into a SQLite index of its own, the permit is recorded as
a node records the hub's copy, the node's job policy decides on the limits and the analysis
environment (`policies/jobs`), and the job runs through the node's own worker
(`runtime.make_worker`): the same staging for the permit's form (pseudonyms, date shifts,
layer 3), the same sandbox and interpreter, the same log and automatic airlock checks with
the extract's terms. Then the outputs are collected as the node gives them to the central
airlock (`endpoints.collect_outputs`, with `policies/disclosure`'s rules), and checked
again as the centre checks what it receives. Nothing here is a copy of those steps: a
change to them changes what `spe job test` shows.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.node.app import NODE_AUDIT
from gateway.node.config import NodeConfig
from gateway.node.index.repository import last_sync_run
from gateway.node.jobs import repository as jobs
from gateway.node.jobs.endpoints import collect_outputs, staging_summary_path
from gateway.node.jobs.runtime import cache_dir_of, make_worker, work_dir_of
from gateway.node.permits import repository as permits
from gateway.node.permits.models import NodePermit
from gateway.node.service import run_sync
from spe.airlock import AirlockReport, OutputRules, check_outputs, rules_from_policy
from spe.airlock.report import places_from, worst
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.policy import PolicyService
from spe.policy.service import make_policy_service
from spe.sandbox import Limits
from spe.sandbox.bwrap import find_bwrap
from spe.sandbox.environments import DEFAULT as DEFAULT_ENVIRONMENT
from spe.sandbox.environments import installed
from spe.settings import Settings
from spe.synth import generate_sites
from spe.synth.shaped import SiteShape, shaped_sites
from spe.wire.jobs import LOG_NAME

JOB_POLICY = "jobs/decision"
#: Who the local job runs as (the node records a job's user; here nobody real).
LOCAL_USER = "researcher@local-dry-run"

Step = Callable[[str, int, int], None]
"""Progress: (what, done, total), e.g. ("synth site-a", 40, 100) or ("run site-a", 0, 1)."""


class DryRunRefused(ValueError):
    """A node would refuse the job as asked (limits, environment): nothing ran."""


class DryRunUnavailable(RuntimeError):
    """This machine cannot run the job as a node does (no bubblewrap, unusable SPE_*)."""


@dataclass
class SiteRun:
    """One institution's part of the dry run."""

    site: str
    state: str  # the node's final state: succeeded, failed, timed_out
    reason: str  # the runner's words, as the researcher would read them
    extract: Path  # the staged extract the job saw (the node's cache layout)
    output: Path
    files: list[dict[str, Any]] = field(default_factory=list)  # the centre's view, per file
    reasons: list[str] = field(default_factory=list)  # report-wide blocking reasons
    log: str = ""  # the job's log as it would reach the checkers
    staging: dict[str, Any] = field(default_factory=dict)  # form, layers, risk_ok, ...


def local_settings(work: Path, base: Settings | None = None) -> Settings:
    """A node's settings for the dry run: its data under `work`, a secret made for this run
    (the pseudonyms of dummy data mean nothing), development mode (a researcher's machine),
    and the analysis environments and sandbox options of the caller's `SPE_*`."""
    try:
        base = base or Settings(environment="development")
    except ValueError as exc:  # pydantic's ValidationError: an SPE_* that is not usable
        raise DryRunUnavailable(f"the SPE_* configuration is not usable: {exc}") from None
    return base.model_copy(update={
        "environment": "development", "data_dir": work,
        "secret_key": type(base.secret_key)(secrets.token_urlsafe(32))})


def check_request(policy: PolicyService, settings: Settings, pid: str, limits: dict[str, Any],
                  environment: str | None) -> tuple[Limits, str]:
    """What each node decides first (gateway/node/jobs/endpoints.py `submit`): the limits
    as the sandbox reads them, within `policies/jobs`' maximum, in an environment the
    node allows and has built. DryRunRefused with the node's reason."""
    try:
        parsed = Limits(**limits)
    except (ValueError, TypeError) as exc:
        raise DryRunRefused(f"limits are not valid: {exc}") from None
    name = environment or DEFAULT_ENVIRONMENT
    decision = policy.decide(JOB_POLICY, {
        "permit": {"id": pid, "known": True, "usable": True, "member": True,
                   "covers_node": True},
        "limits": parsed.model_dump(), "environment": name,
        "installed": sorted(installed(settings))})
    if not decision.allow:
        raise DryRunRefused(decision.reason.removeprefix("denied: "))
    return parsed, name


def _record_permit(sessions, pid: str, form: str, site: str) -> None:
    """The permit as the node keeps the hub's copy: issued, now, naming the local user."""
    with session_scope(sessions) as session:
        if permits.get(session, pid) is not None:
            return
        today = date.today()
        permits.add(session, NodePermit(
            pid=pid, seq=1, status="issued", members=[LOCAL_USER],
            datasets=[f"{site}/dry-run"], form=form, start=today - timedelta(days=1),
            end=today + timedelta(days=365), document="(a local dry run: no document)",
            received_at=datetime.now(UTC)))


def _central_check(outputs, rules: OutputRules) -> dict[str, Any]:
    """What the centre's airlock finds again in the files a node sent (`submit_outputs`
    checks the received bytes, without the extract), by path."""
    with tempfile.TemporaryDirectory(prefix="spe-dry-central-") as tmp:
        for item in outputs.files:
            target = Path(tmp, *item.path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(item.data))
        report: AirlockReport = check_outputs(Path(tmp), rules=rules)
    return {f.path: f for f in report.files}


def run_site(work: Path, shape_site: str, *, synth: Path, pid: str, form: str, code: bytes,
             entry: str, limits: Limits, environment: str, settings: Settings,
             policy: PolicyService, rules: OutputRules,
             progress: Step | None = None) -> SiteRun:
    """Index one synthetic site as its node would, then run the job there."""
    label = shape_site
    db = work / f"{shape_site}.db"
    db.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    dicom, fhir = f"folder:{synth / shape_site / 'dicom'}", f"ndjson:{synth / shape_site / 'fhir'}"
    if progress:
        progress(f"index {label}", 0, 1)
    run_sync(url, dicom=dicom, fhir=fhir, actor="spe job test")
    if progress:
        progress(f"index {label}", 1, 1)
    config = NodeConfig(shape_site, shape_site, url, dicom=dicom, fhir=fhir)
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        _record_permit(sessions, pid, form, shape_site)
        with session_scope(sessions) as session:
            job = jobs.enqueue(session, pid=pid, user_id=LOCAL_USER, code=code, entry=entry,
                               limits=limits, environment=environment, max_attempts=1)
            job_id = job.id
            run = last_sync_run(session)
            version = str(run.id) if run is not None else "0"
        if progress:
            progress(f"stage and run {label}", 0, 1)
        worker = make_worker(config, settings, policy, sessions, NODE_AUDIT, name="dry-run")
        worker.run_job(job_id)
        if progress:
            progress(f"stage and run {label}", 1, 1)
        with session_scope(sessions) as session:
            job = jobs.get(session, job_id)
            assert job is not None
            session.expunge(job)
    finally:
        engine.dispose()

    output = work_dir_of(settings, shape_site) / job_id / "output"
    extract = cache_dir_of(settings, shape_site) / pid / version
    result = job.result or {}
    ran = bool(result.get("log"))
    site = SiteRun(site=shape_site, state=job.state, reason=job.reason or "", extract=extract,
                   output=output, staging=_staging_summary(settings, shape_site, job_id))
    if not ran:  # failed before the sandbox (staging refused, no environment): no outputs
        return site
    sent = collect_outputs(job, output, rules, log_only=job.state != "succeeded")
    again = _central_check(sent, rules)
    site.reasons = list(sent.reasons)
    for entry in sent.report:
        seen = again.get(entry["path"])
        verdict = entry["verdict"]
        reasons = list(entry.get("reasons") or [])
        # The centre keeps at most MAX_PLACES of a node's places per file (places_from),
        # so rules are those an output checker sees.
        rules_found = {p["rule"] for p in places_from(entry.get("places"))}
        if seen is not None:  # the centre's check of the bytes it received
            verdict = worst(verdict, seen.verdict)
            reasons += [r for r in seen.reasons if r not in reasons]
            rules_found |= {p.rule for p in seen.places}
        site.files.append({"path": entry["path"], "kind": entry.get("kind", ""),
                           "verdict": verdict, "reasons": reasons,
                           "rules": sorted(r for r in rules_found if r),
                           "size": entry.get("size", 0)})
    try:
        site.log = (output / LOG_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        site.log = ""
    return site


def _staging_summary(settings: Settings, site: str, job_id: str) -> dict[str, Any]:
    try:
        return json.loads(staging_summary_path(work_dir_of(settings, site), job_id)
                          .read_text())
    except (OSError, ValueError):
        return {}


def dry_run(work: Path, shapes: list[SiteShape], *, pid: str, form: str, code: bytes,
            entry: str, limits: dict[str, Any], environment: str | None, patients: int,
            seed: int = 1, settings: Settings | None = None,
            progress: Step | None = None) -> list[SiteRun]:
    """The whole dry run in `work` (made if missing; a previous run's sites replaced)."""
    if form not in ("anonymised", "pseudonymised"):
        raise DryRunRefused(f"the permit's form {form!r} is neither anonymised nor "
                            "pseudonymised")
    work.mkdir(parents=True, exist_ok=True)
    settings = local_settings(work / "node", settings)
    if find_bwrap(settings.sandbox_bwrap) is None:  # before minutes of dummy data
        raise DryRunUnavailable("bubblewrap (bwrap) is not installed here, and the job runs "
                                "in it as at the nodes: apt-get install bubblewrap, or set "
                                "SPE_SANDBOX_BWRAP")
    policy = make_policy_service(settings)
    parsed, name = check_request(policy, settings, pid, limits, environment)
    rules = rules_from_policy(policy)
    synth = work / "synth"
    shutil.rmtree(synth, ignore_errors=True)
    shutil.rmtree(work / "node", ignore_errors=True)  # extracts of an earlier dry run
    sites = shaped_sites(shapes, seed)
    generate_sites(synth, sites, patients=patients, seed=seed,
                   progress=(lambda what, done, total: progress(what, done, total))
                   if progress else None)
    return [run_site(work, site.id, synth=synth, pid=pid, form=form, code=code, entry=entry,
                     limits=parsed, environment=name, settings=settings, policy=policy,
                     rules=rules, progress=progress) for site in sites]


__all__ = ["DryRunRefused", "DryRunUnavailable", "SiteRun", "check_request", "dry_run",
           "local_settings"]
