"""All SQL of the federation's membership."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.hub.membership.models import FederationNode


def changes(session: Session) -> list[FederationNode]:
    return list(session.scalars(select(FederationNode).order_by(FederationNode.node_id)))


def set_state(session: Session, node_id: str, *, state: str, url: str | None,
              actor: str) -> FederationNode:
    row = session.get(FederationNode, node_id, with_for_update=True)
    now = datetime.now(UTC)
    if row is None:
        row = FederationNode(node_id=node_id, state=state, url=url, changed_by=actor,
                             changed_at=now)
        session.add(row)
    else:
        row.state, row.url, row.changed_by, row.changed_at = state, url, actor, now
    session.flush()
    return row


__all__ = ["changes", "set_state"]
