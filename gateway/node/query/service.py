"""A node answering a federated query: its own policy, the evaluation, disclosure control
(threshold, perturbation) and the audit entry, in the request's transaction.

The hub's word is not taken for anything but who asks and in which tier (its signed
context): the budget, the thresholds, the noise and what is suppressed are decided here,
where the data is (policies/query `node_decision`, policies/disclosure).

In the statistics tier every shown count is perturbed by the cell-key method
(`perturb.py`): the count of a set of patients plus a noise looked up from their record
keys, so the same set always gives the same value and a differencing pair of questions
reveals nothing exact. There is therefore no differencing refusal (a refusal that depends
on the data is itself a disclosure); counts under the threshold are suppressed, totals are
perturbed in their own right and never withheld, and the strata are the values the node's
whole population has at least the threshold of (query-independent). The daily budget
bounds how many distinct sets a researcher can average over. The permit tier is exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from gateway.node.permits.facts import permit_facts
from gateway.node.query import repository
from gateway.node.query.evaluate import evaluate, stratum_domain
from gateway.node.query.perturb import PTable, load_record_keys, noise_for
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
EXACT_TIERS = frozenset({"permit"})  # tiers whose answers may be exact (policy permitting)


def small(threshold: int) -> str:
    return (f"fewer than {threshold} patients: not shown; widen the question (fewer "
            "criteria or coarser strata)")


def perturbed(max_noise: int) -> str:
    return (f"perturbed by at most ±{max_noise} (cell-key method); the same question always "
            "gives this value")


def rounded(n: int, base: int) -> int:
    """To the nearest multiple of base, halves up (Python's round() goes to even)."""
    return int(base * math.floor(n / base + 0.5)) if base > 1 else n


def cell_name(key: tuple[tuple[str, str], ...]) -> str:
    return "|".join(f"{k}={v}" for k, v in key)


@dataclass
class _Disclosure:
    """Each count's fate: suppressed under the threshold, else shown (perturbed when the
    policy says so)."""

    threshold: int
    rounding: int
    table: PTable | None
    record_keys: np.ndarray | None
    shown: list[tuple[str, int]] = field(default_factory=list)  # (name, shown value)
    reasons: dict[str, str] = field(default_factory=dict)  # cell name -> why suppressed

    def cell(self, name: str, key: dict[str, str], ids: np.ndarray) -> Cell:
        n = len(ids)
        if n < self.threshold:
            why = small(self.threshold)
            self.reasons[name or "total"] = why
            return Cell(key=key, value=None, suppressed=True, reason=why)
        if self.table is None or self.record_keys is None:
            value = rounded(n, self.rounding)
            self.shown.append((name, value))
            return Cell(key=key, value=value)
        value = rounded(n + noise_for(ids, self.record_keys, self.table), self.rounding)
        self.shown.append((name, value))
        # The policy's bounds, not the row's: a row near the threshold has a smaller spread,
        # and saying so would tell how near the threshold the count is.
        return Cell(key=key, value=value, perturbed=True, max_noise=self.table.max_noise,
                    sd=math.sqrt(self.table.variance), reason=perturbed(self.table.max_noise))


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
    cellkey_secret: Callable[[], bytes] | None = None,
    today: date | None = None,
    query_hash: str | None = None,
) -> NodeAnswer:
    """`query_hash`: `query.digest()`, when the caller has it already; `cellkey_secret`
    gives the node's record-key secret (perturb.NodeSecret.get), needed whenever the
    policy perturbs."""
    now = datetime.now(UTC)
    today = today or now.date()
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
        table = (None if rule.perturbation is None
                 else PTable.from_policy(rule.perturbation.as_params(), rule.min_count))
    except (NoCountRule, ValueError) as exc:
        raise _refuse(sessions, audit, ctx, query_hash, str(exc)) from None
    if table is None and ctx.tier not in EXACT_TIERS:
        # Fail closed: without noise, related questions would single out small groups.
        raise _refuse(sessions, audit, ctx, query_hash,
                      f"denied: the disclosure policy gives no perturbation for counts in "
                      f"tier {ctx.tier}")
    if table is not None and cellkey_secret is None:
        raise _refuse(sessions, audit, ctx, query_hash,
                      "denied: this node has no record-key secret to perturb counts with")
    threshold, rounding = rule.min_count, rule.rounding

    result = evaluate(session, query, node_id=node_id, today=today)
    keys = None if table is None else load_record_keys(session, cellkey_secret())  # type: ignore[misc]
    d = _Disclosure(threshold, rounding, table, keys)
    kind = query.answer.kind
    out = NodeAnswer(node_id=node_id, tier=ctx.tier, kind=kind, threshold=threshold,
                     rounding=rounding)
    structural: list[str] = []
    if kind == "stratified":
        # Every cell of the strata's domains, empty ones too (suppressed like any small
        # count: an absent cell would say "none" as plainly as a 0). The domains depend on
        # the node's whole population, not on the query; a value outside them is no cell.
        domains = [stratum_domain(session, s, node_id=node_id, today=today,
                                  min_count=threshold) for s in query.answer.by]
        structural = [f"{dom.stratum}: {', '.join(dom.structural)}: fewer than {threshold} "
                      "patients in the whole node, so not a stratum here (structural, not "
                      "a suppressed cell)" for dom in domains if dom.structural]
        keys_ = itertools.product(*([(dom.stratum, v) for v in dom.values] for dom in domains))
        out.cells = [d.cell(cell_name(key), dict(key), result.cells.get(key, EMPTY))
                     for key in sorted(keys_)]
    # The total in its own right (never derived from the cells, never withheld for them).
    out.total = d.cell("", {}, result.ids)
    if kind == "boolean":
        # Only "yes, at least the threshold" is said; fewer (even none) is suppressed. It
        # depends on nothing but n >= threshold.
        out.exists = None if out.total.suppressed else True
        out.total = Cell(value=None, suppressed=out.total.suppressed,
                         reason=out.total.reason if out.total.suppressed else None)
    by_reason: dict[str, list[str]] = {}
    for name, why in d.reasons.items():
        by_reason.setdefault(why, []).append(name)
    out.notes = [f"{', '.join(names)}: {why}" for why, names in by_reason.items()]
    out.notes += structural
    if table is not None and d.shown:
        out.notes.append(f"counts {perturbed(table.max_noise)}")

    # The budget counts one row per query. No set of patients is kept: the perturbation
    # needs no history of them.
    repository.record(session, [
        {"user_id": ctx.sub, "at": now, "query_hash": query_hash, "cell": "",
         "size": len(result.ids), "shown": not out.total.suppressed, "bitmap": b""}])
    audit.record(session, actor=ctx.sub, action="query", object=query_hash,
                 decision="allow", reason=decision.reason,
                 details={"tier": ctx.tier, "kind": kind, "permit": ctx.permit,
                          "answered": {name or "total": v for name, v in d.shown}
                          if kind != "boolean" else {"exists": out.exists},
                          "perturbed": table is not None,
                          "suppressed": d.reasons})
    return out


__all__ = ["QueryRefused", "answer", "rounded"]
