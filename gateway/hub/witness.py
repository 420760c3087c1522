"""The hub as witness of its nodes' audit logs: it pulls each node's signed checkpoints
(spe.wire.audit) and keeps those whose signature the node's certificate (issued by the
federation CA to that node) verifies, in `audit_witness`. A node whose database is later
rewritten disagrees with what the hub holds: `spe audit verify --node NODE` names the entry.

A checkpoint that does not verify, or whose head or start disagrees with a head witnessed
before (a forked history), is logged at ERROR and audited as a denial; a forked one is kept
as evidence.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from gateway.hub.calls import call_node
from gateway.hub.rounds import Outages, every
from gateway.hub.service import Hub
from spe.audit import AuditWitness
from spe.audit.checkpoints import DIGEST_HEX, Signed, Trust, check_signature, trust_for
from spe.db import session_scope
from spe.pki import PkiError
from spe.web import AppContext
from spe.wire.audit import (
    CHECKPOINTS_PATH,
    WITNESS,
    WITNESS_ROLE,
    WITNESSED,
    NodeCheckpoints,
    witness_query_hash,
)

log = logging.getLogger(__name__)


async def witness_once(ctx: AppContext, hub: Hub,
                       outages: Outages | None = None) -> dict[str, int]:
    """Pull every node's new checkpoints; node -> how many were stored."""
    stored: dict[str, int] = {}
    failing: dict[str, str] = {}
    for node_id in hub.fanout.nodes:
        after = await run_in_threadpool(_last_witnessed, ctx, node_id)
        context = hub.signer.sign(user=WITNESS, roles=[WITNESS_ROLE], tier="statistics",
                                  query_hash=witness_query_hash(after), node_id=node_id)
        status, answer = await call_node(hub, node_id, "GET",
                                         f"{CHECKPOINTS_PATH}?after={after}", context)
        if status != 200:
            failing[node_id] = f"{status} {answer}"
            continue
        try:
            pulled = NodeCheckpoints.model_validate(answer)
        except ValidationError:
            log.error("audit checkpoints of %s: not a valid answer", node_id)
            continue
        stored[node_id] = await run_in_threadpool(_store, ctx, node_id, pulled)
    to_say = set(failing) if outages is None else outages.news(set(failing))
    for node_id in sorted(to_say):
        log.warning("audit checkpoints of %s not pulled: %s", node_id, failing[node_id])
    return stored


def _last_witnessed(ctx: AppContext, node_id: str) -> int:
    with ctx.sessions() as session:
        return session.execute(select(func.max(AuditWitness.seq))
                               .where(AuditWitness.node_id == node_id)).scalar_one() or 0


def _store(ctx: AppContext, node_id: str, pulled: NodeCheckpoints) -> int:
    try:
        trust = trust_for(ctx.settings, node_id)
    except PkiError as exc:
        log.error("cannot check the audit checkpoints of %s: %s", node_id, exc)
        return 0
    stored = 0
    with session_scope(ctx.sessions) as session:
        for item in pulled.checkpoints:
            signed = Signed(item.body, item.signature, item.cert)
            data, problem = _checked(session, node_id, signed, trust, pulled.node_id)
            if problem:
                log.error("AUDIT WITNESS of %s: %s", node_id, problem)
                ctx.audit.record(session, actor=WITNESS, action="audit.witness",
                                 object=f"node:{node_id}", decision="deny", reason=problem)
            if data is None:
                continue
            session.add(AuditWitness(
                node_id=node_id, seq=data["seq"], head_hash=data["hash"],
                at=datetime.fromisoformat(data["at"]), received_at=datetime.now(UTC),
                key_id=data["key_id"], body=signed.body, signature=signed.signature,
                cert=signed.cert))
            # Also in the hub's own (signed) chain: deleting witness rows shows there.
            ctx.audit.record(session, actor=WITNESS, action=WITNESSED,
                             object=f"node:{node_id}", decision="info",
                             reason=f"witnessed its head at entry {data['seq']}",
                             details={"seq": data["seq"], "hash": data["hash"]})
            stored += 1
    return stored


def _checked(session, node_id: str, signed: Signed, trust: Trust,
             answered_for: str) -> tuple[dict[str, Any] | None, str]:
    """(the fields to store or None, the problem to raise or "")."""
    if answered_for != node_id:
        return None, f"refused: the node answered as {answered_for!r}"
    data, problem = check_signature(signed, trust)
    if data is None:
        return None, f"refused: the checkpoint {problem}"
    # Heads witnessed before within this one's stretch: its start, its digests, its head.
    known = dict(session.execute(
        select(AuditWitness.seq, AuditWitness.head_hash)
        .where(AuditWitness.node_id == node_id)
        .where(AuditWitness.seq.between(data["from"], data["seq"]))).all())
    claims = {data["from"]: data["from_hash"], data["seq"]: data["hash"]}
    if any(not known[seq].startswith(_digest(data, seq)) for seq in known
           if seq not in claims) or any(
            seq in known and known[seq] != h for seq, h in claims.items()):
        # Kept: the node's own signatures on two histories are the evidence.
        return data, (f"forked: its checkpoint of entry {data['seq']} disagrees with a head "
                      "witnessed before")
    if data["seq"] in known:
        return None, ""  # witnessed already
    return data, ""


def _digest(data: dict[str, Any], seq: int) -> str:
    i = seq - data["from"] - 1
    return data["digests"][i * DIGEST_HEX:(i + 1) * DIGEST_HEX]


async def witness_periodically(ctx: AppContext, hub: Hub, interval: float) -> None:
    """Pull the nodes' checkpoints every `interval` seconds; a node not reached (the demo
    starts its nodes with the centre) is asked again within seconds, so that a fresh node is
    witnessed (`spe audit verify --node`) soon after it starts."""
    outages = Outages()
    await every(interval, lambda: witness_once(ctx, hub, outages),
                "pulling the nodes' audit checkpoints", log,
                missed=lambda stored: set(stored) != set(hub.fanout.nodes))
