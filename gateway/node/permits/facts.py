"""What this node's own copy of a permit says, as the policies take it (policies/query and
policies/jobs): the hub's word that a permit applies is never enough."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from gateway.node.permits import repository as permits
from spe.wire.context import HubContext


def permit_facts(session: Session, ctx: HubContext, day: date) -> dict | None:
    """None when the context names no permit; else whether this node knows it, and if so
    whether it is usable on `day`, names the caller, and covers a dataset of this node."""
    if ctx.permit is None:
        return None
    held = permits.get(session, ctx.permit)
    if held is None:
        return {"id": ctx.permit, "known": False}
    return {"id": ctx.permit, "known": True,
            "usable": held.status == "issued" and held.start <= day <= held.end,
            "member": ctx.sub in held.members, "covers_node": bool(held.datasets)}
