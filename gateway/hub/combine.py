"""Combining the nodes' answers into the federation's.

Only what a node showed is added up: a suppressed total or cell contributes nothing, so
the combined figure minus the shown ones is always 0 and recovers nothing. Below the
policy's `min_sites` answering nodes there is no combined figure at all.
"""

from __future__ import annotations

from collections import defaultdict

from gateway.hub.schemas import FederatedAnswer, NodeResult
from spe.wire.query import Cell


def combine(results: list[NodeResult], *, query_hash: str, tier: str, kind: str,
            min_sites: int) -> FederatedAnswer:
    answering = [r for r in results if r.answer is not None]
    out = FederatedAnswer(query_hash=query_hash, tier=tier, kind=kind, nodes=results,
                          sites_answering=len(answering), min_sites=min_sites)
    if len(answering) < min_sites:
        out.notes.append(f"{len(answering)} of {len(results)} sites answered; at least "
                         f"{min_sites} are needed for a combined answer")
        return out
    answers = [r.answer for r in answering]
    left_out = [a.node_id for a in answers if a.total is None or a.total.suppressed]
    if kind == "boolean":
        out.exists = True if any(a.exists for a in answers) else None
    elif answers:
        shown = [a.total.value for a in answers
                 if a.total is not None and not a.total.suppressed]
        out.total = Cell(value=sum(shown), suppressed=False) if shown else Cell(
            value=None, suppressed=True)
    if kind == "stratified":
        sums: dict[tuple, int] = defaultdict(int)
        hidden: set[tuple] = set()
        for a in answers:
            for c in a.cells:
                key = tuple(sorted(c.key.items()))
                if c.suppressed:
                    hidden.add(key)
                else:
                    sums[key] += c.value or 0
        out.cells = [Cell(key=dict(k), value=sums[k]) if k in sums
                     else Cell(key=dict(k), value=None, suppressed=True)
                     for k in sorted(set(sums) | hidden)]
        partial = sorted(hidden & set(sums))
        if partial:
            out.notes.append(f"{len(partial)} cell(s) add up only the sites that showed "
                             "them")
    if left_out and kind != "boolean":
        out.notes.append("the total leaves out the suppressed answers of "
                         + ", ".join(left_out))
    return out


__all__ = ["combine"]
