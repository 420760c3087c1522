from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from spe.audit.models import AuditEntryMixin


def page(
    session: Session, model: type[AuditEntryMixin], *, after: int, limit: int
) -> list[AuditEntryMixin]:
    return list(session.execute(
        select(model).where(model.seq > after).order_by(model.seq).limit(limit)
    ).scalars())
