"""The permit lifecycle. Every step asks `policies/permits` first and is audited either
way: an allowed step in the change's own transaction, a refusal in one of its own (the
refused request's transaction is rolled back). Nothing here decides who may do what; the
policy does, from the facts this module gathers.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from spe.audit import CENTRAL_AUDIT, AuditLog
from spe.errors import NotFound, SPEError
from spe.identity import Principal
from spe.permits import repository
from spe.permits.models import (
    Notification,
    Permit,
    PermitDataset,
    PermitEvent,
    PermitMember,
    PermitReview,
)
from spe.permits.schemas import (
    AmendmentIn,
    ApplicationIn,
    ApplicationPatch,
    DatasetOut,
    EventOut,
    PermitOut,
    ReviewIn,
    ReviewOut,
)
from spe.policy import Decision, PolicyService
from spe.policy.gate import decide_or_refuse
from spe.wire.permit import PermitDocument, now, sign_document

#: catalogue identifier -> the node holding it, or None (wired in by spe/app.py, so this
#: package does not import the catalogue).
DatasetHolder = Callable[[Session, str], str | None]


class PermitRefused(SPEError):
    """A step the policy refused; carries the policy's status (403, 409 or 422)."""

    error = "refused_by_policy"

    def __init__(self, detail: str, status_code: int) -> None:
        super().__init__(detail)
        self.status_code = status_code if status_code in (400, 403, 409, 422) else 403


class PermitNotFound(NotFound):
    pass


class UnknownDataset(SPEError):
    status_code = 422
    error = "invalid_request"


def today() -> date:
    return datetime.now(UTC).date()


def effective_status(permit: Permit, on: date | None = None) -> str:
    """An issued permit is active between its dates, not yet active before, expired after."""
    if permit.status != "issued":
        return permit.status
    on = on or today()
    if on < permit.start_date:
        return "not_yet_active"
    if on > permit.end_date:
        return "expired"
    return "active"


def members_of(permit: Permit) -> list[str]:
    return [m.user_id for m in permit.members]


def institutions_of(permit: Permit) -> list[str]:
    return sorted({d.node_id for d in permit.datasets})


def _approvals(permit: Permit) -> dict[str, str]:
    return {r.node_id: r.decision for r in permit.reviews if r.revision == permit.revision}


def policy_input(action: str, principal: Principal, permit: Permit) -> dict[str, Any]:
    return {"action": action, "subject": principal.policy_input(), "permit": {
        "status": effective_status(permit), "applicant": permit.applicant,
        "members": members_of(permit), "institutions": institutions_of(permit),
        "approvals": _approvals(permit), "purpose": permit.purpose,
        "declaration": permit.declaration, "datasets": len(permit.datasets),
        "form": permit.form, "justification": permit.justification,
        "days": (permit.end_date - permit.start_date).days + 1,
        "amendment": ({"institutions": permit.amendment["institutions"]}
                      if permit.amendment else None),
    }}


def _refusal(decision: Decision) -> PermitRefused:
    return PermitRefused(decision.reason, int(decision.values.get("status", 403)))


class Permits:
    """The lifecycle, bound to one app's policy, audit log and session factory."""

    def __init__(self, *, policy: PolicyService, sessions: sessionmaker[Session],
                 holder: DatasetHolder, audit: AuditLog = CENTRAL_AUDIT,
                 on_stopped: Callable[[Session, str], object] | None = None) -> None:
        """`on_stopped(session, pid)`: what else stops with a suspended or revoked permit
        (the central app gives the airlock's withholding; spe.airlock depends on permits,
        not the other way round)."""
        self.policy = policy
        self.on_stopped = on_stopped
        self.sessions = sessions
        self.holder = holder
        self.audit = audit
        self.notified: list[int] = []  # notification ids, to mail once committed

    # ---- decisions ------------------------------------------------------------------

    def _decide(self, session: Session, action: str, principal: Principal,
                permit: Permit) -> str:
        return decide_or_refuse(
            self.policy, "permits/decision", policy_input(action, principal, permit),
            audit=self.audit, sessions=self.sessions, session=session, actor=principal.id,
            action=f"permit.{action}", object=permit.public_id, refuse=_refusal).reason

    def _event(self, permit: Permit, actor: str, action: str, before: str,
               reason: str = "") -> None:
        permit.events.append(PermitEvent(at=datetime.now(UTC), actor=actor, action=action,
                                         from_status=before, to_status=permit.status,
                                         reason=reason))
        permit.updated_at = datetime.now(UTC)

    def _notify(self, session: Session, permit: Permit, message: str, *,
                user_id: str | None = None, role: str | None = None,
                institution: str | None = None) -> None:
        note = Notification(
            user_id=user_id, role=role, institution=institution, permit_id=permit.id,
            message=f"{permit.public_id} ({permit.title}): {message}",
            created_at=datetime.now(UTC))
        repository.notify(session, note)
        session.flush()
        self.notified.append(note.id)

    def load(self, session: Session, public_id: str, *, for_update: bool = False) -> Permit:
        permit = repository.get(session, public_id, for_update=for_update)
        if permit is None:
            raise PermitNotFound(f"no permit or application {public_id!r}")
        return permit

    # ---- the applicant --------------------------------------------------------------

    def _set_datasets(self, session: Session, permit: Permit, identifiers: list[str]) -> None:
        """Make the requested datasets these, keeping rows that stay (a row is unique per
        permit and dataset: replacing them all would insert before it deletes)."""
        wanted: dict[str, str] = {}
        for identifier in dict.fromkeys(identifiers):
            node = self.holder(session, identifier)
            if node is None:
                raise UnknownDataset(f"no dataset {identifier!r} in the catalogue")
            wanted[identifier] = node
        kept = [d for d in permit.datasets if d.dataset in wanted]
        have = {d.dataset for d in kept}
        permit.datasets = kept + [PermitDataset(dataset=i, node_id=n)
                                  for i, n in wanted.items() if i not in have]
        session.flush()

    def _set_members(self, permit: Permit, members: list[str]) -> None:
        """The applicant, then the named members; rows that stay are kept."""
        wanted = [permit.applicant, *(m for m in dict.fromkeys(members)
                                      if m != permit.applicant)]
        kept = {m.user_id: m for m in permit.members if m.user_id in wanted}
        permit.members = [kept.get(u) or PermitMember(
            user_id=u, role="applicant" if u == permit.applicant else "member")
            for u in wanted]

    def create(self, session: Session, principal: Principal, data: ApplicationIn) -> Permit:
        """A new draft; only researchers reach this (policies/authz)."""
        stamp = datetime.now(UTC)
        fields = data.model_dump(exclude={"members", "datasets"})
        permit = Permit(public_id=f"P-{stamp:%Y}-{secrets.token_hex(4)}",
                        applicant=principal.id, created_at=stamp, updated_at=stamp,
                        status="draft", revision=1, members=[], datasets=[], reviews=[],
                        events=[], **fields)
        self._set_members(permit, data.members)
        self._set_datasets(session, permit, data.datasets)
        repository.add(session, permit)
        self.audit.record(session, actor=principal.id, action="permit.create",
                          object=permit.public_id, decision="allow", reason="draft saved")
        self._event(permit, principal.id, "create", "draft", "draft saved")
        session.flush()
        return permit

    def edit(self, session: Session, principal: Principal, public_id: str,
             changes: ApplicationPatch) -> Permit:
        permit = self.load(session, public_id, for_update=True)
        self._decide(session, "edit", principal, permit)
        fields = changes.model_dump(exclude_none=True, exclude={"members", "datasets"})
        for key, value in fields.items():
            setattr(permit, key, value)
        if permit.end_date < permit.start_date:
            raise UnknownDataset("end_date is before start_date")
        if changes.members is not None:
            self._set_members(permit, changes.members)
        if changes.datasets is not None:
            self._set_datasets(session, permit, changes.datasets)
        self._event(permit, principal.id, "edit", permit.status,
                    "edited " + ", ".join(sorted(changes.model_dump(exclude_none=True))))
        session.flush()
        return permit

    def submit(self, session: Session, principal: Principal, public_id: str) -> Permit:
        permit = self.load(session, public_id, for_update=True)
        reason = self._decide(session, "submit", principal, permit)
        before = permit.status
        if before == "changes_requested":
            permit.revision += 1  # every institution reviews the changed application
        permit.status = "submitted"
        self._event(permit, principal.id, "submit", before, reason)
        for node in institutions_of(permit):
            self._notify(session, permit, "awaits your institution's review",
                         role="approver", institution=node)
        session.flush()
        return permit

    def amend(self, session: Session, principal: Principal, public_id: str,
              amendment: AmendmentIn) -> Permit:
        """Ask to add members or datasets to an issued permit; it stays in force as it is
        until the access body issues the amendment. A new member needs every holding
        institution's approval; a new dataset, its holder's."""
        permit = self.load(session, public_id, for_update=True)
        self._decide(session, "amend", principal, permit)
        known = set(members_of(permit))
        members = [m for m in dict.fromkeys(amendment.members) if m not in known]
        have = {d.dataset for d in permit.datasets}
        datasets = []
        for identifier in dict.fromkeys(amendment.datasets):
            if identifier in have:
                continue
            node = self.holder(session, identifier)
            if node is None:
                raise UnknownDataset(f"no dataset {identifier!r} in the catalogue")
            datasets.append({"dataset": identifier, "node_id": node})
        if not members and not datasets:
            raise UnknownDataset("the amendment adds nobody and nothing new")
        needs = set(institutions_of(permit)) if members else set()
        needs |= {d["node_id"] for d in datasets}
        permit.amendment = {"members": members, "datasets": datasets,
                            "institutions": sorted(needs), "reason": amendment.reason}
        permit.revision += 1
        self._event(permit, principal.id, "amend", effective_status(permit), amendment.reason)
        for node in sorted(needs):
            self._notify(session, permit, "an amendment awaits your institution's review",
                         role="approver", institution=node)
        session.flush()
        return permit

    # ---- the institutions -----------------------------------------------------------

    def review(self, session: Session, principal: Principal, public_id: str,
               review: ReviewIn) -> Permit:
        permit = self.load(session, public_id, for_update=True)
        self._decide(session, "review", principal, permit)
        node = principal.institution or ""
        permit.reviews.append(PermitReview(
            revision=permit.revision, node_id=node, decision=review.decision,
            reason=review.reason, conditions=review.conditions, reviewer=principal.id,
            at=datetime.now(UTC)))
        before = permit.status
        if permit.amendment:
            self._review_amendment(session, permit, principal, node, review)
        elif review.decision == "reject":
            permit.status = "rejected"
            self._notify(session, permit, f"rejected by {node}: {review.reason}",
                         user_id=permit.applicant)
        elif review.decision == "changes":
            permit.status = "changes_requested"
            self._notify(session, permit, f"{node} asks for changes: {review.reason}",
                         user_id=permit.applicant)
        elif set(institutions_of(permit)) <= {n for n, d in _approvals(permit).items()
                                             if d == "approve"}:
            permit.status = "approved"
            permit.conditions = [c for r in permit.reviews if r.revision == permit.revision
                                 for c in r.conditions]
            self._notify(session, permit, "approved by every institution; awaits the "
                         "access body's decision", role="hdab")
        self._event(permit, principal.id, f"review:{review.decision}", before,
                    f"{node}: {review.reason}".strip(": "))
        session.flush()
        return permit

    def _review_amendment(self, session: Session, permit: Permit, principal: Principal,
                          node: str, review: ReviewIn) -> None:
        if review.decision != "approve":
            # Turned down (or to be redone): the permit stays as it was.
            permit.amendment = None
            self._notify(session, permit, f"amendment not approved by {node}: "
                         f"{review.reason}", user_id=permit.applicant)
        elif set(permit.amendment["institutions"]) <= {
                n for n, d in _approvals(permit).items() if d == "approve"}:
            self._notify(session, permit, "amendment approved by every institution it "
                         "concerns; awaits the access body's decision", role="hdab")

    # ---- the health data access body ------------------------------------------------

    def decide(self, session: Session, principal: Principal, public_id: str, action: str,
               reason: str, *, private_key=None) -> Permit:
        """issue, refuse, suspend, resume or revoke; an issued permit gets a new signed
        document (`private_key`: the hub's) for the nodes."""
        permit = self.load(session, public_id, for_update=True)
        allowed = self._decide(session, action, principal, permit)
        before = effective_status(permit)
        if action == "issue" and permit.amendment:
            return self._issue_amendment(session, principal, permit, reason or allowed,
                                         private_key)
        permit.status = {"issue": "issued", "refuse": "refused", "suspend": "suspended",
                         "resume": "issued", "revoke": "revoked"}[action]
        permit.decided_at = datetime.now(UTC)
        permit.decision_reason = reason
        self._event(permit, principal.id, action, before, reason or allowed)
        if action in ("suspend", "revoke") and self.on_stopped is not None:
            self.on_stopped(session, permit.public_id)  # pending airlock outputs withheld
        if permit.status in ("issued", "suspended", "revoked") and private_key is not None:
            permit.document = sign_document(self.document(permit), private_key)
        self._notify(session, permit, f"{action}d by the access body"
                     + (f": {reason}" if reason else ""), user_id=permit.applicant)
        session.flush()
        return permit

    def _issue_amendment(self, session: Session, principal: Principal, permit: Permit,
                         reason: str, private_key) -> Permit:
        amendment = permit.amendment or {}
        for user in amendment.get("members", []):
            permit.members.append(PermitMember(user_id=user, role="member"))
        for d in amendment.get("datasets", []):
            permit.datasets.append(PermitDataset(dataset=d["dataset"], node_id=d["node_id"]))
        permit.amendment = None
        permit.decided_at = datetime.now(UTC)
        self._event(permit, principal.id, "issue-amendment", effective_status(permit), reason)
        if private_key is not None:
            permit.document = sign_document(self.document(permit), private_key)
        self._notify(session, permit, "amendment issued by the access body",
                     user_id=permit.applicant)
        session.flush()
        return permit

    @staticmethod
    def document(permit: Permit) -> PermitDocument:
        datasets: dict[str, list[str]] = {}
        for d in permit.datasets:
            datasets.setdefault(d.node_id, []).append(d.dataset)
        return PermitDocument(
            pid=permit.public_id, seq=len(permit.events), status=permit.status,
            members=members_of(permit), datasets=datasets, form=permit.form,
            purpose=permit.purpose, start=permit.start_date, end=permit.end_date, iat=now())

    def check_view(self, session: Session, principal: Principal, permit: Permit, *,
                   audit_allow: bool = False) -> None:
        """Reading an application is a policy decision too (refusals are audited)."""
        decide_or_refuse(
            self.policy, "permits/decision", policy_input("view", principal, permit),
            audit=self.audit, sessions=self.sessions,
            session=session if audit_allow else None, actor=principal.id,
            action="permit.view", object=permit.public_id, refuse=_refusal)

    # ---- use ------------------------------------------------------------------------

    def authorize_use(self, session: Session, principal: Principal, public_id: str) -> Permit:
        """A query or job under the permit: a member, an active permit (policy), audited."""
        permit = self.load(session, public_id)
        self._decide(session, "use", principal, permit)
        return permit


def to_out(permit: Permit, pushed: dict[str, str] | None = None) -> PermitOut:
    reviews = [r for r in permit.reviews if r.revision == permit.revision]
    reviewed = {r.node_id for r in reviews}
    waiting = ([n for n in institutions_of(permit) if n not in reviewed]
               if permit.status == "submitted" else [])
    return PermitOut(
        id=permit.public_id, status=effective_status(permit), applicant=permit.applicant,
        members=members_of(permit), organisation=permit.organisation, title=permit.title,
        summary=permit.summary, purpose=permit.purpose, declaration=permit.declaration,
        legal_basis=permit.legal_basis, form=permit.form, justification=permit.justification,
        ethics_reference=permit.ethics_reference, start_date=permit.start_date,
        end_date=permit.end_date, revision=permit.revision,
        datasets=[DatasetOut(dataset=d.dataset, node_id=d.node_id) for d in permit.datasets],
        institutions=institutions_of(permit),
        reviews=[ReviewOut.model_validate(r) for r in reviews], waiting_for=waiting,
        conditions=list(permit.conditions or []), decision_reason=permit.decision_reason,
        events=[EventOut.model_validate(e) for e in permit.events],
        created_at=permit.created_at, updated_at=permit.updated_at,
        amendment=permit.amendment, pushed=pushed or {})


__all__ = ["DatasetHolder", "PermitNotFound", "PermitRefused", "Permits", "effective_status",
           "to_out"]
