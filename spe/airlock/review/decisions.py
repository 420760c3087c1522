"""Asking `policies/airlock` about a request, and recording the answer in the audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from spe.airlock.review.models import AirlockFile, AirlockRequest
from spe.errors import SPEError


class AirlockRefused(SPEError):
    """A step the policy refused; carries the policy's status (403 or 409)."""

    error = "refused_by_policy"

    def __init__(self, detail: str, status_code: int) -> None:
        super().__init__(detail)
        self.status_code = status_code if status_code in (400, 403, 409) else 403


def file_facts(file: AirlockFile) -> dict[str, Any]:
    return {"path": file.path, "node_id": file.node_id, "verdict": file.verdict,
            "stored": file.stored, "reasons": list(file.reasons or [])}


def policy_input(action: str, subject: dict[str, Any], request: AirlockRequest, *,
                 permit_status: str, members: list[str],
                 file: dict[str, Any] | None = None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "action": action, "subject": subject,
        "request": {
            "state": request.state, "requester": request.requester,
            # Only the current round's reviews count (a later site's outputs void them).
            "reviews": [{"reviewer": r.reviewer, "decision": r.decision}
                        for r in request.reviews if r.round == request.review_round],
            "awaiting": len(request.awaiting or []),
            "report_reasons": len(request.reasons or []),
            "files": [file_facts(f) for f in request.files],
        },
        "permit": {"status": permit_status, "members": members},
    }
    if file is not None:
        facts["file"] = file
    return facts


def permit_facts(session: Session, pid: str) -> tuple[Any, list[str]]:
    """(the permit or None, its members); the permit's raw row, for its status."""
    from spe.permits import repository as permits

    permit = permits.get(session, pid)
    if permit is None:
        return None, []
    return permit, [m.user_id for m in permit.members]
