"""The hub: decide the tier, sign a context per node, fan out, combine, audit."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.hub.combine import combine
from gateway.hub.fanout import Fanout
from gateway.hub.schemas import FederatedAnswer, NodeResult
from gateway.hub.statistics import federated_statistic
from spe.db import session_scope
from spe.errors import Forbidden, SPEError
from spe.identity import Principal
from spe.policy.gate import decide_or_refuse
from spe.web import AppContext
from spe.wire.context import ContextSigner
from spe.wire.query import STATISTICS, Query, Step, step_digest


class QueryRefused(Forbidden):
    error = "refused_by_policy"


class FederationNotConfigured(SPEError):
    status_code = 503
    error = "federation_not_configured"


@dataclass
class Hub:
    fanout: Fanout
    signer: ContextSigner
    private_key: Any = None  # the hub's key (signs permit documents too)


def _audit(ctx: AppContext, **entry) -> None:
    with session_scope(ctx.sessions) as session:
        ctx.audit.record(session, **entry)


async def federated_query(ctx: AppContext, hub: Hub | None, query: Query,
                          caller: Principal, *, permit: str | None = None,
                          use_permit: Callable[[str], Any] | None = None) -> FederatedAnswer:
    """`permit`: ask in the permit tier under it; `use_permit(pid)` raises unless the
    caller may use it now."""
    query_hash = query.digest()

    def admit() -> tuple[Any, dict[str, str], dict[str, str]]:
        """Everything that reads the database before the nodes are asked, in one trip to
        a worker thread (none of it on the event loop): the permit, the decision, the
        members, and a context for each (the suspension list read once for all)."""
        permit_input = None
        if permit is not None:
            # A member of an active permit (policies/permits `use`, audited); refused here,
            # the nodes are not asked at all. Each node checks its own copy again.
            use_permit(permit)
            permit_input = {"id": permit, "usable": True}
        decision = decide_or_refuse(
            ctx.policy, "query/hub_decision",
            {"subject": caller.policy_input(), "permit": permit_input},
            audit=ctx.audit, sessions=ctx.sessions, session=None, actor=caller.id,
            action="query", object=query_hash, refuse=lambda d: QueryRefused(d.reason))
        nodes = hub.fanout.nodes if hub is not None else {}
        if not nodes:
            raise FederationNotConfigured("the hub has no nodes (SPE_FEDERATION_NODES) or "
                                          "no PKI (SPE_PKI_DIR)")
        tier = str(decision.values.get("tier", "statistics"))
        contexts = {} if query.answer.kind in STATISTICS else hub.signer.sign_each(
            list(nodes), user=caller.id, roles=list(caller.roles), tier=tier,
            query_hash=query_hash, permit=permit)
        return decision, nodes, contexts

    decision, nodes, contexts = await run_in_threadpool(admit)
    assert hub is not None  # admit() refused otherwise
    tier = str(decision.values.get("tier", "statistics"))
    min_sites = int(decision.values.get("min_sites", 2))
    if query.answer.kind in STATISTICS:
        async def ask(step: Step | None, only: set[str] | None) -> list[NodeResult]:
            asked = {n: url for n, url in nodes.items() if only is None or n in only}
            signed = await run_in_threadpool(functools.partial(
                hub.signer.sign_each, list(asked), user=caller.id, roles=list(caller.roles),
                tier=tier, query_hash=step_digest(query_hash, step), permit=permit))
            return await hub.fanout.ask(query, signed.__getitem__, step=step, nodes=asked)

        answer = await federated_statistic(query, ask, query_hash=query_hash, tier=tier,
                                           min_sites=min_sites)
        await run_in_threadpool(
            _audit, ctx, actor=caller.id, action="query", object=query_hash,
            decision="allow", reason=decision.reason,
            details={"tier": tier, "kind": query.answer.kind, "permit": permit,
                     "nodes": {r.node_id: r.status for r in answer.nodes},
                     "contributing": answer.sites_answering,
                     "rounds": (answer.result or {}).get("rounds"),
                     "n": (answer.result or {}).get("n")})
        return answer
    results = await hub.fanout.ask(query, contexts.__getitem__, nodes=nodes)
    answer = combine(results, query_hash=query_hash, tier=tier, kind=query.answer.kind,
                     min_sites=min_sites)
    await run_in_threadpool(
        _audit, ctx, actor=caller.id, action="query", object=query_hash, decision="allow",
        reason=decision.reason,
        details={"tier": tier, "kind": query.answer.kind, "permit": permit,
                 "nodes": {r.node_id: r.status for r in results},
                 "total": answer.total.value if answer.total else None,
                 "suppressed": [r.node_id for r in results if r.status == "suppressed"]})
    return answer


__all__ = ["FederationNotConfigured", "Hub", "QueryRefused", "federated_query"]
