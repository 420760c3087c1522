"""All SQL of the node's permits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.node.permits.models import NodePermit


def get(session: Session, pid: str) -> NodePermit | None:
    return session.execute(select(NodePermit).where(NodePermit.pid == pid)).scalar_one_or_none()


def add(session: Session, permit: NodePermit) -> None:
    session.add(permit)
    session.flush()
