"""The airlock's review at the centre. Every step asks `policies/airlock` and is audited
either way: an allowed step in the request's transaction, a refusal in one of its own (the
refused request's transaction is rolled back). Nothing here decides who may do what."""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from spe.airlock.review import repository
from spe.airlock.review.decisions import (
    AirlockRefused,
    file_facts,
    permit_facts,
    policy_input,
)
from spe.airlock.review.models import AirlockFile, AirlockRequest, AirlockReview
from spe.airlock.review.storage import copy_outputs
from spe.airlock.rules import OutputRules
from spe.audit import CENTRAL_AUDIT, AuditLog
from spe.errors import Conflict, NotFound
from spe.identity import Principal
from spe.permits.service import effective_status
from spe.policy import PolicyService
from spe.policy.gate import decide_or_refuse
from spe.wire.outputs import COLLECTOR, COLLECTOR_ROLE

#: Who submits outputs: the hub's collector (gateway/hub/collect.py), as policies see it.
COLLECTOR_SUBJECT: dict[str, Any] = {"id": COLLECTOR, "roles": [COLLECTOR_ROLE],
                                     "institution": None}
_READ = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class RequestNotFound(NotFound):
    pass


def submit_outputs(session: Session, *, job_id: str, node_id: str, pid: str,
                   requester: str, output_dir: Path, storage_dir: Path,
                   rules: OutputRules, policy: PolicyService,
                   submitter: dict[str, Any] = COLLECTOR_SUBJECT,
                   audit: AuditLog = CENTRAL_AUDIT,
                   awaiting: list[str] | None = None) -> AirlockRequest:
    """A site's outputs of a finished job become that site's section of the job's pending
    request (created with the first site's): checked, and every entry the checks did not
    block copied under `storage_dir / <request id>`; blocked entries are listed with their
    reasons and never stored. Outputs arriving after reviews started void those reviews
    (a new review round, said in `review_note`). `awaiting`: the job's sites still to
    come. `policies/airlock` decides first (only the hub's collector submits, for a permit
    naming the job's user, to a pending request); a refusal raises AirlockRefused, which
    the caller audits (its transaction is rolled back). Settling (closing a request that
    kept nothing) is `settle_collected`, once the caller has added what it knows."""
    request = repository.of_job(session, job_id, for_update=True)
    new = request is None
    if request is None:
        request = AirlockRequest(id=secrets.token_hex(16), job_id=job_id, node_id=node_id,
                                 pid=pid, requester=requester, created_at=datetime.now(UTC),
                                 state="pending", reasons=[], sites=[], awaiting=[],
                                 review_round=1, review_note=None, files=[], reviews=[])
    permit, members = permit_facts(session, pid)
    status = "missing" if permit is None else effective_status(permit)
    decision = policy.decide("airlock/decision", policy_input(
        "submit", submitter, request, permit_status=status, members=members))
    if not decision.allow:
        raise AirlockRefused(decision.reason, decision.values.get("status", 403))
    if any(s.get("node_id") == node_id for s in request.sites or []):
        raise AirlockRefused(f"the outputs of {node_id} are already in the request", 409)
    # A folder per arrival: a site's name is not a path, nor can it meet a stored file's.
    target = storage_dir / request.id / secrets.token_hex(8)
    report, stored = copy_outputs(output_dir, target, rules)
    now = datetime.now(UTC)
    request.reasons = [*(request.reasons or []), *(f"at {node_id}: {r}" for r in report.reasons)]
    request.sites = [*(request.sites or []), {"node_id": node_id, "at": now.isoformat(),
                                              "reasons": list(report.reasons)}]
    request.awaiting = [n for n in (awaiting or []) if n != node_id]
    for entry in report.files:
        request.files.append(AirlockFile(
            node_id=node_id, path=entry.path, size=entry.size, sha256=stored.get(entry.path),
            kind=entry.kind, verdict=entry.verdict, reasons=list(entry.reasons),
            notes=list(entry.notes), places=[p.model_dump() for p in entry.places],
            stored=entry.path in stored,
            stored_path=str(target / entry.path) if entry.path in stored else None))
    current = [r for r in request.reviews if r.round == request.review_round]
    if current:
        request.review_round += 1
        request.review_note = (
            f"The outputs of {node_id} arrived at {now:%Y-%m-%d %H:%M} UTC after "
            f"{len(current)} review(s) had started: those reviews are void, and the "
            "request needs review again (two approvals).")
    if new:
        repository.add(session, request)
    session.flush()
    blocked = sum(f.verdict == "blocked" for f in request.files if f.node_id == node_id)
    audit.record(session, actor=requester, action="airlock.submit", object=request.id,
                 decision="allow", reason=f"{node_id}: {len(stored)} file(s) stored for "
                 f"review, {blocked} blocked by the automatic checks; {decision.reason}"
                 + (f"; {len(current)} earlier review(s) void" if current else ""),
                 details={"job_id": job_id, "node_id": node_id, "pid": pid,
                          "submitter": submitter.get("id")})
    return request


def settle_collected(session: Session, job_id: str, awaiting: list[str], *,
                     policy: PolicyService, audit: AuditLog = CENTRAL_AUDIT
                     ) -> AirlockRequest | None:
    """After a site's part of the job was collected (with or without outputs): record
    which sites are still awaited and, once none is, close the job's pending request if
    it kept nothing (every file blocked by the automatic checks; the requester reads why),
    or release it if its reviews already suffice. `policies/airlock` decides; each answer
    is audited in this transaction."""
    request = repository.of_job(session, job_id, for_update=True)
    if request is None:
        return None
    request.awaiting = list(awaiting)
    if request.state != "pending" or request.awaiting:
        session.flush()
        return request
    permit, members = permit_facts(session, request.pid)
    status = "missing" if permit is None else effective_status(permit)
    for action, state in (("close", "closed"), ("release", "released")):
        answer = policy.decide("airlock/decision", policy_input(
            action, COLLECTOR_SUBJECT, request, permit_status=status, members=members))
        if answer.allow or action == "close":
            audit.record(session, actor=COLLECTOR, action=f"airlock.{action}",
                         object=request.id, decision="allow" if answer.allow else "deny",
                         reason=answer.reason)
        if answer.allow:
            request.state, request.decided_at = state, datetime.now(UTC)
            break
    session.flush()
    return request


class Airlock:
    """The review steps, bound to one app's policy, audit log and session factory."""

    def __init__(self, *, policy: PolicyService, sessions: sessionmaker[Session],
                 audit: AuditLog = CENTRAL_AUDIT) -> None:
        self.policy = policy
        self.sessions = sessions
        self.audit = audit

    def load(self, session: Session, request_id: str, *,
             for_update: bool = False) -> AirlockRequest:
        request = repository.get(session, request_id, for_update=for_update)
        if request is None:
            raise RequestNotFound(f"no airlock request {request_id!r}")
        return request

    def _input(self, session: Session, action: str, subject: dict[str, Any],
               request: AirlockRequest, file: dict[str, Any] | None = None) -> dict:
        permit, members = permit_facts(session, request.pid)
        status = "missing" if permit is None else effective_status(permit)
        return policy_input(action, subject, request, permit_status=status,
                            members=members, file=file)

    def _decide(self, session: Session, action: str, principal: Principal,
                request: AirlockRequest, file: dict[str, Any] | None = None) -> str:
        return decide_or_refuse(
            self.policy, "airlock/decision",
            self._input(session, action, principal.policy_input(), request, file),
            audit=self.audit, sessions=self.sessions, session=session, actor=principal.id,
            action=f"airlock.{action}", object=request.id,
            details={"path": file["path"]} if file else None,
            refuse=lambda d: AirlockRefused(d.reason, int(d.values.get("status", 403)))
        ).reason

    # ---- reading --------------------------------------------------------------------

    def view(self, session: Session, principal: Principal, request_id: str
             ) -> AirlockRequest:
        request = self.load(session, request_id)
        self._decide(session, "view", principal, request)
        return request

    def visible(self, session: Session, principal: Principal) -> list[AirlockRequest]:
        """An output checker's queue (pending requests, the ones a site's late outputs
        reopened to review among them), or a researcher's own requests."""
        if "output_checker" in principal.roles:
            return repository.list_for(session, states=["pending"])
        return repository.list_for(session, requester=principal.id)

    # ---- an output checker reviews -----------------------------------------------------

    def review(self, session: Session, principal: Principal, request_id: str,
               decision: str, reason: str) -> AirlockRequest:
        request = self.load(session, request_id, for_update=True)
        self._decide(session, "review", principal, request)
        request.reviews.append(AirlockReview(reviewer=principal.id, decision=decision,
                                             round=request.review_round, reason=reason,
                                             at=datetime.now(UTC)))
        session.flush()
        self._settle(session, principal, request)
        session.flush()
        return request

    def _settle(self, session: Session, principal: Principal,
                request: AirlockRequest) -> None:
        """Rejected on any reject; released once the policy says so. The release answer is
        audited either way in this transaction (it is nobody's refused request)."""
        subject = principal.policy_input()
        rejected = self.policy.decide("airlock/decision",
                                      self._input(session, "reject", subject, request))
        if rejected.allow:
            request.state, action, answer = "rejected", "airlock.reject", rejected
        else:
            answer = self.policy.decide("airlock/decision",
                                        self._input(session, "release", subject, request))
            action = "airlock.release"
            if answer.allow:
                request.state = "released"
        if request.state != "pending":
            request.decided_at = datetime.now(UTC)
        self.audit.record(session, actor=principal.id, action=action, object=request.id,
                          decision="allow" if answer.allow else "deny", reason=answer.reason)

    # ---- an output checker reads a file under review ---------------------------------------

    def inspect(self, session: Session, principal: Principal, request_id: str,
                path: str) -> tuple[AirlockFile, bytes]:
        """A stored file's bytes, for an output checker who may review the request."""
        request = self.load(session, request_id)
        file = find_file(request, path)
        facts = (file_facts(file) if file is not None else
                 {"path": path, "verdict": "missing", "stored": False, "reasons": []})
        self._decide(session, "inspect", principal, request, facts)
        return file, self._stored_bytes(file)  # type: ignore[arg-type]

    # ---- the requester downloads ---------------------------------------------------------

    def download(self, session: Session, principal: Principal, request_id: str,
                 path: str) -> tuple[AirlockFile, bytes]:
        request = self.load(session, request_id)
        file = find_file(request, path)
        facts = (file_facts(file) if file is not None else
                 {"path": path, "verdict": "missing", "stored": False, "reasons": []})
        self._decide(session, "download", principal, request, facts)
        return file, self._stored_bytes(file)  # type: ignore[arg-type]

    @staticmethod
    def _stored_bytes(file: AirlockFile | None) -> bytes:
        if file is None or not file.stored_path:  # the policy allows stored files only
            raise Conflict("the file was not stored")
        data = _read_stored(Path(file.stored_path))
        if hashlib.sha256(data).hexdigest() != file.sha256:
            raise Conflict("the stored copy does not match its checksum; not released")
        return data


def find_file(request: AirlockRequest, name: str) -> AirlockFile | None:
    """The file named `<site>/<path>`; or, as addresses made before a request had sites
    read, by its path alone when only one site sent that path."""
    found = next((f for f in request.files if f.name == name), None)
    if found is None:
        alone = [f for f in request.files if f.path == name]
        found = alone[0] if len(alone) == 1 else None
    return found


def _read_stored(path: Path) -> bytes:
    try:
        fd = os.open(path, _READ)
    except OSError as exc:
        raise Conflict(f"the stored copy cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


__all__ = ["Airlock", "AirlockRefused", "RequestNotFound", "find_file", "settle_collected",
           "submit_outputs"]
