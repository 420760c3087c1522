"""Suspending or revoking a permit withholds its pending outputs (called by spe/permits in
the decision's own transaction, so the withholding commits or rolls back with it)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from spe.airlock.review import repository
from spe.airlock.review.decisions import permit_facts, policy_input
from spe.airlock.review.models import AirlockRequest
from spe.audit import CENTRAL_AUDIT, AuditLog
from spe.policy import PolicyService

SYSTEM = {"id": "airlock", "roles": [], "institution": None}


def withhold_for_permit(session: Session, pid: str, *, policy: PolicyService,
                        audit: AuditLog = CENTRAL_AUDIT) -> list[AirlockRequest]:
    """Every pending request of the permit becomes withheld when `policies/airlock` says
    so (a suspended or revoked permit). Each answer is audited in this transaction: nothing
    here is refused to a caller, so nothing is rolled back."""
    permit, members = permit_facts(session, pid)
    # A suspended or revoked permit's status is its effective status (spe/permits).
    status = "missing" if permit is None else permit.status
    withheld = []
    for request in repository.list_for(session, pid=pid, states=["pending"],
                                       for_update=True, limit=10_000):
        decision = policy.decide("airlock/decision", policy_input(
            "withhold", SYSTEM, request, permit_status=status, members=members))
        audit.record(session, actor="airlock", action="airlock.withhold", object=request.id,
                     decision="allow" if decision.allow else "deny", reason=decision.reason,
                     details={"pid": pid})
        if decision.allow:
            request.state = "withheld"
            request.decided_at = datetime.now(UTC)
            withheld.append(request)
    session.flush()
    return withheld
