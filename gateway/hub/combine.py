"""Combining the nodes' answers into the federation's.

Only what a node showed is added up: a suppressed total or cell contributes nothing, so
the combined figure minus the shown ones is always 0 and recovers nothing. Below the
policy's `min_sites` answering nodes there is no combined figure at all.

In the statistics tier the nodes' shown counts are perturbed (each by independent noise of
mean 0, cell-key method): the combined count is their sum, perturbed by at most the sum of
their `max_noise`, with standard deviation sqrt(sum of their variances).
"""

from __future__ import annotations

import math
from collections import defaultdict

from gateway.hub.schemas import FederatedAnswer, NodeResult
from spe.wire.query import Cell


def _sum(key: dict[str, str], parts: list[Cell]) -> Cell:
    """The sum of shown cells, with their combined uncertainty."""
    value = sum(c.value or 0 for c in parts)
    noisy = [c for c in parts if c.perturbed]
    if not noisy:
        return Cell(key=key, value=value)
    max_noise = sum(c.max_noise or 0 for c in noisy)
    sd = math.sqrt(sum((c.sd or 0.0) ** 2 for c in noisy))
    return Cell(key=key, value=value, perturbed=True, max_noise=max_noise, sd=round(sd, 6),
                reason=f"the sum of {len(parts)} site(s)' perturbed counts: within ±{max_noise}"
                       f" of the true count, standard deviation {sd:.1f}; the same question "
                       "always gives this value")


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
        if out.exists is None:
            out.notes.append("no site has at least its threshold of such patients (fewer "
                             "are not told apart from none); widen the question")
    elif answers:
        shown = [a.total for a in answers if a.total is not None and not a.total.suppressed]
        out.total = _sum({}, shown) if shown else Cell(
            value=None, suppressed=True,
            reason="every site has fewer patients than its threshold: not shown; widen the "
                   "question (fewer criteria)")
    if kind == "stratified":
        parts: dict[tuple, list[Cell]] = defaultdict(list)
        hidden: dict[tuple, list[str]] = defaultdict(list)
        for a in answers:
            for c in a.cells:
                key = tuple(sorted(c.key.items()))
                if c.suppressed:
                    hidden[key].append(a.node_id)
                else:
                    parts[key].append(c)
        out.cells = []
        for k in sorted(set(parts) | set(hidden)):
            if k in parts:
                cell = _sum(dict(k), parts[k])
                if k in hidden:
                    cell.reason = ((cell.reason + "; " if cell.reason else "")
                                   + "leaves out " + ", ".join(hidden[k])
                                   + " (fewer patients than the threshold there)")
                out.cells.append(cell)
            else:
                out.cells.append(Cell(
                    key=dict(k), value=None, suppressed=True,
                    reason="fewer patients than the threshold at every site that has this "
                           "stratum: not shown; widen the question (fewer criteria or "
                           "coarser strata)"))
        partial = sorted(set(hidden) & set(parts))
        if partial:
            out.notes.append(f"{len(partial)} cell(s) add up only the sites that showed "
                             "them")
    if left_out and kind != "boolean":
        out.notes.append("the total leaves out the suppressed answers of "
                         + ", ".join(left_out) + " (fewer patients than the threshold)")
    if out.total is not None and out.total.perturbed:
        out.notes.append("counts are perturbed at each site (cell-key method) and the "
                         f"total is within ±{out.total.max_noise} of the true count "
                         f"(standard deviation {out.total.sd:.1f}); asking again gives the "
                         "same values")
    return out


__all__ = ["combine"]
