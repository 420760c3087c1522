"""A node answering a federated query: its own policy, the evaluation, disclosure control
(threshold, rounding, differencing) and the audit entry, in the request's transaction.

The hub's word is not taken for anything but who asks and in which tier (its signed
context): the budget, the thresholds and what is suppressed are decided here, where the
data is (policies/query `node_decision`, policies/disclosure).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from gateway.node.permits.facts import permit_facts
from gateway.node.query import repository
from gateway.node.query.evaluate import evaluate, stratum_values
from gateway.node.query.tracker import reveals_small_group, to_bitmap
from spe.audit import AuditLog
from spe.errors import Forbidden, SPEError
from spe.policy import PolicyService
from spe.policy.disclosure import NoCountRule, count_rule
from spe.policy.gate import audit_refusal, decide_or_refuse
from spe.wire.context import HubContext
from spe.wire.query import Cell, NodeAnswer, Query


class QueryRefused(Forbidden):
    """The node's policy refused to answer (budget, tier, role)."""

    error = "refused_by_policy"


EMPTY = np.zeros(0, dtype=np.int64)
BELOW = "below the threshold"
DIFFERENCING = "differencing: with an earlier answer it would single out a small group"
WITHHELD = "withheld: it would let a suppressed cell be recomputed"


def rounded(n: int, base: int) -> int:
    """To the nearest multiple of base, halves up (Python's round() goes to even)."""
    return int(base * math.floor(n / base + 0.5)) if base > 1 else n


def cell_name(key: tuple[tuple[str, str], ...]) -> str:
    return "|".join(f"{k}={v}" for k, v in key)


@dataclass
class _Disclosure:
    threshold: int
    rounding: int
    earlier: list[bytes]
    shown: list[tuple[str, np.ndarray]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # cell name -> why suppressed

    def cell(self, name: str, key: dict[str, str], ids: np.ndarray) -> Cell:
        if len(ids) < self.threshold:
            why = BELOW
        elif reveals_small_group(ids, self.earlier, self.threshold):
            why = DIFFERENCING
        else:
            self.shown.append((name, ids))
            return Cell(key=key, value=rounded(len(ids), self.rounding))
        self.reasons[name or "total"] = why
        return Cell(key=key, value=None, suppressed=True)

    def withheld(self, name: str, key: dict[str, str]) -> Cell:
        self.reasons[name or "total"] = WITHHELD
        return Cell(key=key, value=None, suppressed=True)


def _refuse(sessions: sessionmaker[Session], audit: AuditLog, ctx: HubContext,
            query_hash: str, reason: str) -> SPEError:
    return audit_refusal(audit, sessions, QueryRefused(reason), actor=ctx.sub,
                         action="query", object=query_hash, details={"tier": ctx.tier})


def answer(
    session: Session,
    query: Query,
    ctx: HubContext,
    *,
    node_id: str,
    policy: PolicyService,
    audit: AuditLog,
    sessions: sessionmaker[Session],
    today: date | None = None,
    query_hash: str | None = None,
) -> NodeAnswer:
    """`query_hash`: `query.digest()`, when the caller has it already."""
    now = datetime.now(UTC)
    query_hash = query_hash or query.digest()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    decision = decide_or_refuse(policy, "query/node_decision", {
        "tier": ctx.tier, "roles": ctx.roles, "kind": query.answer.kind,
        "used_today": repository.answered_since(session, ctx.sub, midnight),
        "permit": permit_facts(session, ctx, now.date())},
        audit=audit, sessions=sessions, session=None, actor=ctx.sub, action="query",
        object=query_hash, details={"tier": ctx.tier},
        refuse=lambda d: QueryRefused(d.reason))
    try:
        rule = count_rule(policy, ctx.tier, "query_count")
    except NoCountRule as exc:
        raise _refuse(sessions, audit, ctx, query_hash, str(exc)) from None
    threshold, rounding = rule.min_count, rule.rounding

    window = timedelta(hours=int(decision.values.get("tracker_window_hours", 24)))
    earlier = repository.shown_sets(session, ctx.sub, now - window,
                                    int(decision.values.get("tracker_history", 200)))
    result = evaluate(session, query, node_id=node_id, today=today)
    d = _Disclosure(threshold, rounding, earlier)
    kind = query.answer.kind
    out = NodeAnswer(node_id=node_id, tier=ctx.tier, kind=kind, threshold=threshold,
                     rounding=rounding)
    if kind == "stratified":
        # Every cell of the strata, empty ones too (suppressed like any small count: an
        # absent cell would say "none" as plainly as a 0). Cells first; a total beside a
        # suppressed cell would give it away by subtraction.
        cells = {key: result.cells.get(key, EMPTY) for key in itertools.product(*(
            [(s, v) for v in stratum_values(session, s, node_id=node_id)]
            for s in query.answer.by))}
        cells.update(result.cells)  # a value outside the domain still shows
        out.cells = [d.cell(cell_name(key), dict(key), ids)
                     for key, ids in sorted(cells.items())]
        if any(c.suppressed for c in out.cells):
            out.total = d.withheld("", {})
        else:
            out.total = d.cell("", {}, result.ids)
    else:
        out.total = d.cell("", {}, result.ids)
        if kind == "boolean":
            # Only "yes, at least the threshold" is said; fewer (even none) is suppressed.
            out.exists = None if out.total.suppressed else True
            out.total = Cell(value=None, suppressed=out.total.suppressed)
    out.notes = [f"{name}: {why}" for name, why in d.reasons.items()]

    shown = {name for name, _ in d.shown}
    sets = [("", result.ids)] + [(cell_name(k), ids) for k, ids in result.cells.items()]
    repository.record(session, [
        {"user_id": ctx.sub, "at": now, "query_hash": query_hash, "cell": name,
         "size": len(ids), "shown": name in shown, "bitmap": to_bitmap(ids)}
        for name, ids in sets if name == "" or name in shown])
    audit.record(session, actor=ctx.sub, action="query", object=query_hash,
                 decision="allow", reason=decision.reason,
                 details={"tier": ctx.tier, "kind": kind, "permit": ctx.permit,
                          "answered": {c.key and cell_name(tuple(c.key.items())) or "total":
                                       c.value for c in [out.total, *out.cells]
                                       if c is not None and not c.suppressed},
                          "suppressed": d.reasons})
    return out


__all__ = ["QueryRefused", "answer", "rounded"]
