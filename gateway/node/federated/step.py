"""One round's step at a node: the permit's extract (staged as for jobs, cached), the
step in the sandbox, the gate (spe.federated.gate) with the node's policy, and the privacy
spent. Returns the `RoundReply` the hub may read, and what the node's audit keeps.

Folders: `SPE_DATA_DIR/fed/<node>/<run>/<round>-<attempt>/{code,output}`, removed once
the round is answered. Files the step keeps (`keep/`, with a contract that says so) go to
`<extract>/derived/<run>/`, read-only, where later jobs and rounds of the same permit and
data version find them under `/extract/derived/<run>/`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.node.config import NodeConfig
from gateway.node.federated.models import FedSpend
from gateway.node.jobs.runtime import make_stage
from gateway.node.jobs.staging_errors import RiskRefused
from spe.anonymize.extract import load_records
from spe.db import session_scope
from spe.federated import gate
from spe.federated.privacy import epsilon
from spe.policy import PolicyService
from spe.private_files import make_private
from spe.sandbox import Limits, SandboxError, run
from spe.settings import Settings
from spe.wire.code_archive import unpack_code
from spe.wire.rounds import (
    ACCEPTED,
    FAILED,
    GATE_REASONS,
    INPUT_ARRAYS,
    REFUSED,
    ROUND_DIR,
    ROUND_FILE,
    BadArrays,
    RoundReply,
    RoundRequest,
    pack_arrays,
    unpack_arrays,
)

log = logging.getLogger(__name__)
GATE_POLICY = "federated/gate"
DERIVED = "derived"


@dataclass
class StepOutcome:
    reply: RoundReply
    audit: dict[str, Any] = field(default_factory=dict)  # for the node's audit only


def fed_dir_of(settings: Settings, node_id: str) -> Path:
    return settings.data_dir / "fed" / node_id


def _refused(node: str, code: str, seconds: float = 0.0, state: str = REFUSED,
             **audit: Any) -> StepOutcome:
    return StepOutcome(RoundReply(node=node, state=state, reason=GATE_REASONS[code],
                                  seconds=round(seconds, 3)),
                       {"gate": code, **audit})


_patients: dict[str, int] = {}


def extract_patients(extract: Path) -> int:
    """The patients of a staged extract (as staging measured them), cached per folder."""
    key = str(extract)
    if key not in _patients:
        report = json.loads((extract / "report.json").read_text())
        risk = report.get("risk") or {}
        if isinstance(risk.get("records"), int):
            _patients[key] = risk["records"]
        else:
            _patients[key] = len(load_records(extract / "fhir", extract / "dicom"))
    return _patients[key]


def spent_before(session: Session, pid: str, run: str) -> tuple[float, int]:
    """(epsilon the permit's other runs spent here, rounds this run already spent)."""
    last = (select(FedSpend.run, func.max(FedSpend.epsilon_run).label("eps"))
            .where(FedSpend.pid == pid, FedSpend.run != run).group_by(FedSpend.run)
            .subquery())
    others = session.scalar(select(func.coalesce(func.sum(last.c.eps), 0.0))) or 0.0
    mine = session.scalar(select(func.count()).select_from(FedSpend).where(
        FedSpend.pid == pid, FedSpend.run == run)) or 0
    return float(others), int(mine)


def run_round(body: RoundRequest, *, pid: str, config: NodeConfig, settings: Settings,
              policy: PolicyService, sessions: sessionmaker[Session],
              python: str | None = None) -> StepOutcome:
    node = config.node_id
    started = time.monotonic()
    try:
        inputs = unpack_arrays(body.arrays) if body.arrays else {}
    except BadArrays:
        return _refused(node, "node_error", detail="the round's input arrays are unreadable")
    stage = make_stage(config, settings, policy, sessions)
    try:
        extract = Path(stage(SimpleNamespace(id=f"fed-{body.run}", pid=pid, attempts=1)))
    except RiskRefused as exc:
        return _refused(node, "staging", state=FAILED, detail=f"risk: {exc}")
    except Exception as exc:  # the operator reads why in the audit, the hub the words
        log.warning("fed run %s round %d: staging failed (%s)", body.run, body.round,
                    type(exc).__name__)
        return _refused(node, "staging", state=FAILED, detail=f"staging: {exc}"[:500])
    # A folder per attempt: a retry may arrive while an attempt the hub gave up on still
    # runs, and neither may empty the other's folders.
    root = fed_dir_of(settings, node) / body.run / f"{body.round}-{uuid.uuid4().hex[:12]}"
    code, output = root / "code", root / "output"
    output.mkdir(parents=True)
    try:
        try:
            unpack_code(base64_decode(body.code), code)
        except ValueError as exc:
            return _refused(node, "node_error", state=FAILED, detail=f"code: {exc}")
        (code / ROUND_DIR).mkdir(exist_ok=True)
        (code / ROUND_DIR / ROUND_FILE).write_text(json.dumps({
            "run": body.run, "round": body.round, "kind": body.kind, "node": node,
            "config": body.config}))
        if inputs:
            np.savez(code / ROUND_DIR / INPUT_ARRAYS, **inputs)
        try:
            limits = Limits(**body.limits)
            result = run(code, body.entry, extract, output, limits, python=python)
        except (SandboxError, TypeError, ValueError) as exc:
            return _refused(node, "node_error", time.monotonic() - started, FAILED,
                            detail=f"sandbox: {exc}"[:500])
        seconds = result.wall_seconds  # the step's time in the sandbox, not its staging
        _operator_log(root.parent / f"{body.round}.log", result)
        try:
            make_private(output)
        except OSError:
            return _refused(node, "node_error", seconds, FAILED, detail="outputs not private")
        sandbox = {"state": result.state, "exit_code": result.exit_code,
                   "signal": result.signal, "limit": result.limit,
                   "seconds": round(result.wall_seconds, 3)}
        if result.state != "succeeded":
            code_ = "step_limit" if result.limit else "step_failed"
            return _refused(node, code_, seconds, FAILED, sandbox=sandbox)
        checked = gate.check(output, body.contract, min_patients=0, extract_patients=None)
        if not checked.allow:
            return _refused(node, checked.reason, seconds, sandbox=sandbox,
                            detail=checked.detail)
        return _gate_and_send(body, pid=pid, node=node, extract=extract, checked=checked,
                              inputs=inputs, policy=policy, sessions=sessions,
                              seconds=seconds, sandbox=sandbox)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _operator_log(path: Path, result: Any) -> None:
    """What the step printed, for the node's operator only (it may name a patient): it
    never leaves the node, not even to the hub."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as out:
            out.write(result.stdout_tail + "\n--- stderr ---\n" + result.stderr_tail)
    except OSError:
        log.warning("the round's log could not be written for the operator")


def base64_decode(text: str) -> bytes:
    import base64
    import binascii
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the code is not base64") from None


def _gate_and_send(body: RoundRequest, *, pid: str, node: str, extract: Path,
                   checked: gate.GateResult, inputs: dict[str, np.ndarray],
                   policy: PolicyService, sessions: sessionmaker[Session], seconds: float,
                   sandbox: dict[str, Any]) -> StepOutcome:
    privacy = body.contract.privacy
    with session_scope(sessions) as session:
        before, rounds_done = spent_before(session, pid, body.run) if privacy else (0.0, 0)
        after = (epsilon(privacy.noise_multiplier, rounds_done + 1, privacy.delta)
                 if privacy else None)
        try:
            patients = extract_patients(extract)
        except Exception:
            return _refused(node, "node_error", seconds, FAILED, sandbox=sandbox,
                            detail="the extract's patients could not be counted")
        decision = policy.decide(GATE_POLICY, {
            "n": checked.n, "extract_patients": patients, "epsilon_before": before,
            "epsilon_after": after})
        if not decision.allow:
            code = str(decision.values.get("code") or "policy")
            return _refused(node, code if code in GATE_REASONS else "policy", seconds,
                            sandbox=sandbox, policy=decision.reason)
        sent = checked
        spend: dict[str, float] | None = None
        if privacy:
            sent = gate.add_noise(checked, body.contract, inputs, np.random.default_rng())
            session.add(FedSpend(pid=pid, run=body.run, round=body.round,
                                 noise_multiplier=privacy.noise_multiplier,
                                 delta=privacy.delta, epsilon_run=float(after or 0.0),
                                 at=datetime.now(UTC)))
            spend = {"epsilon": round(float(after or 0.0), 6), "delta": privacy.delta,
                     "noise_multiplier": privacy.noise_multiplier, "clip": privacy.clip,
                     "epsilon_permit": round(before + float(after or 0.0), 6),
                     "clipped": 1.0 if sent.clipped else 0.0}
    if sent.keep:
        _keep(sent.keep, extract, body.run)
    reply = RoundReply(node=node, state=ACCEPTED, n=sent.n,
                       arrays=pack_arrays(sent.arrays) if sent.arrays else None,
                       metrics=sent.metrics, privacy=spend, seconds=round(seconds, 3))
    return StepOutcome(reply, {"gate": "accepted", "n": sent.n, "sandbox": sandbox,
                               "arrays": {k: list(v.shape) for k, v in sent.arrays.items()},
                               "metrics": sorted(sent.metrics), "privacy": spend})


def _keep(files: list[Path], extract: Path, run_id: str) -> None:
    """The step's kept files into `<extract>/derived/<run>/` (replacing an earlier copy)."""
    target = extract / DERIVED / run_id
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in files:
        keep_root = next(p for p in path.parents if p.name == "keep")
        dest = target / path.relative_to(keep_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest, follow_symlinks=False)
        os.chmod(dest, 0o644)
