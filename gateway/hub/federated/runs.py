"""A federated run, driven round by round from the hub.

`start`: the caller must be allowed to use the permit now (`Permits.authorize_use`: a
member, an active permit; audited); the run's nodes must be institutions of the permit
(default: all of them). The run is recorded (spe.federated.models.FedRun) and driven in
the central service's event loop: each round goes to every node still in the run at once
(`Rounds.send`, a `RoundRequest` signed per node), and each node answers its gate's
`RoundReply`. A node that fails, is refused or does not answer in time is handled by the
run's rule: "stop" the run, "retry" it (`retries` times, then stop) or "skip" it for the
rest of the run (stopping when fewer than `min_nodes` are left). Each round is recorded
and audited with every node's state, in the gate's words; the updates themselves are
never stored, and they reach the app's aggregator at the hub only, never the researcher.
Only the run's final result goes to the airlock (gateway/hub/federated/release.py).

The hub drives a run in the process that started it: a run found "running" after that
process stopped is marked failed when next read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from gateway.hub.calls import call_node
from gateway.hub.federated.schemas import FedRunSubmission, FedRunView, NodeRoundView, RoundView
from gateway.hub.service import FederationNotConfigured, Hub
from spe.db import session_scope
from spe.errors import Forbidden, NotFound
from spe.federated.models import FedRun
from spe.identity import Principal
from spe.policy.gate import decide_or_refuse
from spe.sandbox.limits import Limits
from spe.web import AppContext
from spe.wire.jobs import InvalidJob, JobRefused
from spe.wire.rounds import (
    ACCEPTED,
    ROUNDS_PATH,
    Contract,
    RoundReply,
    RoundRequest,
    pack_arrays,
    unpack_arrays,
)

log = logging.getLogger(__name__)
ACCESS_POLICY = "jobs/access"  # who reads and cancels a run: as for a job

#: Runs this process drives: id -> task. A run's task holds its own reference here.
_tasks: dict[str, asyncio.Task] = {}


class RunStopped(Exception):
    """The run cannot go on: the failure rule said stop, or too few nodes are left."""


def _now() -> datetime:
    return datetime.now(UTC)


def _audit(ctx: AppContext, **entry: Any) -> None:
    with session_scope(ctx.sessions) as session:
        ctx.audit.record(session, **entry)


def _hub(hub: Hub | None) -> Hub:
    if hub is None or not hub.fanout.nodes:
        raise FederationNotConfigured("the hub has no nodes (SPE_FEDERATION_NODES) or no "
                                      "PKI (SPE_PKI_DIR)")
    return hub


def view(run: FedRun) -> FedRunView:
    return FedRunView(
        id=run.id, permit=run.pid, user=run.user_id, app=run.app, state=run.state,
        reason=run.reason or "", nodes=list(run.config.get("nodes") or []),
        rounds_planned=run.config.get("rounds_planned"),
        rounds=[RoundView(round=r["round"], kind=r["kind"], at=r["at"],
                          nodes={n: NodeRoundView(**s) for n, s in r["nodes"].items()},
                          metrics=r.get("metrics") or {}) for r in run.rounds or []],
        privacy={k: float(v) for k, v in (run.privacy or {}).items()},
        airlock=run.airlock, created_at=run.created_at, updated_at=run.updated_at)


class Rounds:
    """The rounds of one run: who is still in it, and sending a round to them."""

    def __init__(self, ctx: AppContext, hub: Hub, run_id: str, body: FedRunSubmission,
                 caller: Principal, nodes: list[str]) -> None:
        self.ctx, self.hub, self.run_id, self.body, self.caller = ctx, hub, run_id, body, caller
        self.active = list(nodes)
        self.round = 0
        self.epsilon: dict[str, float] = {}
        self.last: dict[str, RoundReply] = {}  # the last round's replies, by node

    async def _one(self, node_id: str, request: RoundRequest) -> RoundReply:
        context = self.hub.signer.sign(
            user=self.caller.id, roles=list(self.caller.roles), tier="permit",
            query_hash=request.digest(), node_id=node_id, permit=self.body.permit)
        status, answer = await call_node(self.hub, node_id, "POST", ROUNDS_PATH, context,
                                         json=request.model_dump(mode="json"),
                                         timeout=self.body.round_timeout)
        if status == 200:
            try:
                reply = RoundReply.model_validate(answer)
            except ValidationError:
                return RoundReply(node=node_id, state="failed",
                                  reason="the node's answer is not a round reply")
            return reply.model_copy(update={"node": node_id})
        if status == 0:
            return RoundReply(node=node_id, state="failed", reason=f"unreachable: {answer}")
        state = "refused" if status in (401, 403, 404, 409, 413, 422) else "failed"
        return RoundReply(node=node_id, state=state, reason=f"{answer}"[:300])

    async def send(self, kind: str, *, app: str, code: str, entry: str, contract: Contract,
                   config: Callable[[str], dict[str, Any]] | dict[str, Any],
                   arrays: Callable[[str], dict[str, np.ndarray]] | dict[str, np.ndarray]
                   | None = None, pool: Callable[[dict[str, RoundReply]], dict[str, float]]
                   | None = None, to: list[str] | None = None, hold: bool = False
                   ) -> dict[str, RoundReply]:
        """One round to every active node (or those of `to` still active); the accepted
        replies (node -> reply), after the run's failure rule. `config`/`arrays` may
        differ per node (functions of it). With `hold`, the pooled metrics and each node's
        seconds are kept for the result's history in the airlock and not shown with the run:
        the researcher's code (a Flower app's) computed the one and controls the other, so
        they reach the researcher only through the output checkers."""
        self.round += 1
        number = self.round
        targets = [n for n in self.active if to is None or n in to]

        def request_for(node_id: str) -> RoundRequest:
            given = arrays(node_id) if callable(arrays) else arrays
            return RoundRequest(
                run=self.run_id, round=number, kind=kind, app=app, code=code, entry=entry,
                config=config(node_id) if callable(config) else config,
                arrays=pack_arrays(given) if given else None, contract=contract,
                limits=self.body.limits)

        attempts = dict.fromkeys(targets, 1)
        replies = dict(zip(targets, await asyncio.gather(
            *(self._one(n, request_for(n)) for n in targets)), strict=True))
        if self.body.on_failure == "retry":
            for _ in range(self.body.retries):
                again = [n for n, r in replies.items() if r.state != ACCEPTED]
                if not again:
                    break
                for n, r in zip(again, await asyncio.gather(
                        *(self._one(n, request_for(n)) for n in again)), strict=True):
                    replies[n] = r
                    attempts[n] += 1
        self.last = replies
        for node_id, reply in replies.items():
            if reply.privacy and "epsilon" in reply.privacy:
                self.epsilon[node_id] = float(reply.privacy["epsilon"])
        accepted = {n: r for n, r in replies.items() if r.state == ACCEPTED}
        metrics = pool(accepted) if pool else pooled_metrics(accepted)
        failing = sorted(set(replies) - set(accepted))
        if failing and self.body.on_failure == "skip":
            self.active = [n for n in self.active if n not in failing]
        await run_in_threadpool(self._record, number, kind, replies, attempts, metrics, hold)
        if failing and self.body.on_failure != "skip":
            raise RunStopped(f"round {number} ({kind}): " + _in_words(replies, failing))
        if len(self.active) < self.body.min_nodes:
            raise RunStopped(f"round {number} ({kind}): {len(self.active)} node(s) left, "
                             f"fewer than the run's minimum of {self.body.min_nodes}"
                             + (": " + _in_words(replies, failing) if failing else ""))
        return accepted

    def _record(self, number: int, kind: str, replies: dict[str, RoundReply],
                attempts: dict[str, int], metrics: dict[str, float], hold: bool = False
                ) -> None:
        # Held too: how long the researcher's code ran at each node (a timing it controls).
        nodes = {n: {"state": r.state, "reason": r.reason,
                     "seconds": 0.0 if hold else r.seconds,
                     "attempts": attempts.get(n, 1), "epsilon": self.epsilon.get(n)}
                 for n, r in sorted(replies.items())}
        entry = {"round": number, "kind": kind, "at": _now().isoformat(), "nodes": nodes,
                 "metrics": {} if hold else metrics, "held_metrics": metrics if hold else {},
                 "held_seconds": {n: r.seconds for n, r in replies.items()} if hold else {}}
        with session_scope(self.ctx.sessions) as session:
            run = session.get(FedRun, self.run_id)
            run.rounds = [*(run.rounds or []), entry]
            run.privacy = dict(self.epsilon)
            run.updated_at = _now()
            self.ctx.audit.record(
                session, actor=self.caller.id, action="fed.round",
                object=f"fed:{self.run_id}/{number}",
                decision="allow" if all(r.state == ACCEPTED for r in replies.values())
                else "info", reason=f"round {number} ({kind})",
                details={"permit": self.body.permit, "kind": kind,
                         "nodes": {n: f"{s['state']}: {s['reason']}".rstrip(": ")
                                   for n, s in nodes.items()},
                         "epsilon": dict(self.epsilon)})


def _in_words(replies: dict[str, RoundReply], failing: list[str]) -> str:
    by_reason: dict[str, list[str]] = {}
    for n in failing:
        by_reason.setdefault(f"{replies[n].state}: {replies[n].reason}".rstrip(": "),
                             []).append(n)
    return "; ".join(f"{', '.join(ns)}: {why}" for why, ns in by_reason.items())


def pooled_metrics(accepted: dict[str, RoundReply]) -> dict[str, float]:
    """Each metric's mean over the nodes that sent it, weighted by their counts."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for reply in accepted.values():
        w = float(reply.n or 0)
        for name, value in reply.metrics.items():
            sums[name] = sums.get(name, 0.0) + w * value
            weights[name] = weights.get(name, 0.0) + w
    return {k: sums[k] / weights[k] for k in sums if weights[k] > 0}


def arrays_of(reply: RoundReply) -> dict[str, np.ndarray]:
    return unpack_arrays(reply.arrays) if reply.arrays else {}


Driver = Callable[["Rounds"], Awaitable[None]]


@dataclass(frozen=True)
class App:
    """How the hub drives one kind of run: `check` refuses a bad submission (InvalidJob)
    before anything is sent, `drive` runs its rounds. The apps live beside this module
    (gateway/hub/federated/apps.py) and are handed in, so that they may import it."""

    drive: Driver
    check: Callable[[FedRunSubmission], object] = lambda _body: None


async def start(ctx: AppContext, hub: Hub | None, body: FedRunSubmission, caller: Principal,
                use_permit: Callable[[str], list[str]], app: App) -> FedRunView:
    institutions = await run_in_threadpool(use_permit, body.permit)
    targets = sorted(set(body.nodes)) if body.nodes else sorted(institutions)
    outside = [n for n in targets if n not in institutions]
    if outside or not targets:
        reason = (f"not an institution of permit {body.permit}: {', '.join(outside)}"
                  if outside else f"permit {body.permit} covers no institution")
        await run_in_threadpool(_audit, ctx, actor=caller.id, action="fed.start",
                                object=f"permit:{body.permit}", decision="deny",
                                reason=reason, details={"nodes": targets, "app": body.app})
        raise JobRefused(reason)
    if len(targets) < body.min_nodes:
        raise InvalidJob(f"min_nodes: the run has {len(targets)} node(s), fewer than "
                         f"its minimum of {body.min_nodes}")
    try:
        Limits(**body.limits)
    except (ValidationError, TypeError) as exc:
        raise InvalidJob(f"limits are not valid: {exc}"[:300]) from None
    # InvalidJob names what is wrong, before anything is sent
    await run_in_threadpool(app.check, body)
    hub = _hub(hub)
    run_id = uuid.uuid4().hex
    code_sha = hashlib.sha256((body.code or "").encode()).hexdigest()

    def record() -> FedRunView:
        with session_scope(ctx.sessions) as session:
            run = FedRun(id=run_id, pid=body.permit, user_id=caller.id, app=body.app,
                         state="running", reason="",
                         config={"nodes": targets, "on_failure": body.on_failure,
                                 "retries": body.retries, "min_nodes": body.min_nodes,
                                 "privacy": body.privacy.model_dump() if body.privacy
                                 else None, "config": body.config, "limits": body.limits,
                                 "code_sha256": code_sha if body.code else None},
                         rounds=[], privacy={}, airlock=None, created_at=_now(),
                         updated_at=_now())
            session.add(run)
            ctx.audit.record(session, actor=caller.id, action="fed.start",
                             object=f"fed:{run_id}", decision="allow",
                             reason=f"{body.app} run on {', '.join(targets)}",
                             details={"permit": body.permit, "app": body.app,
                                      "nodes": targets, "code_sha256": run.config[
                                          "code_sha256"], "privacy": run.config["privacy"],
                                      "on_failure": body.on_failure})
            session.flush()
            return view(run)

    shown = await run_in_threadpool(record)
    rounds = Rounds(ctx, hub, run_id, body, caller, targets)
    task = asyncio.create_task(_drive(ctx, rounds, app.drive))
    _tasks[run_id] = task
    task.add_done_callback(lambda _t: _tasks.pop(run_id, None))
    return shown


async def _drive(ctx: AppContext, rounds: Rounds, driver: Driver) -> None:
    state, reason = "succeeded", ""
    try:
        await driver(rounds)
    except RunStopped as exc:
        state, reason = "failed", str(exc)
    except asyncio.CancelledError:
        state, reason = "cancelled", "cancelled by its user"
    except Exception as exc:  # the run ends, whatever happened; the operator reads why
        log.exception("fed run %s: the hub could not drive it", rounds.run_id)
        state, reason = "failed", f"the hub could not drive the run ({type(exc).__name__})"
    await run_in_threadpool(finish, ctx, rounds.run_id, state, reason, rounds.caller.id)


def finish(ctx: AppContext, run_id: str, state: str, reason: str, actor: str) -> None:
    with session_scope(ctx.sessions) as session:
        run = session.get(FedRun, run_id)
        if run is None or run.state != "running":
            return
        run.state, run.reason, run.updated_at = state, reason[:2000], _now()
        ctx.audit.record(session, actor=actor, action="fed.finish", object=f"fed:{run_id}",
                         decision="info", reason=f"{state}: {reason}".rstrip(": "),
                         details={"permit": run.pid, "rounds": len(run.rounds or []),
                                  "privacy": run.privacy, "airlock": run.airlock})


def set_airlock(ctx: AppContext, run_id: str, request_id: str | None,
                planned: int | None = None) -> None:
    with session_scope(ctx.sessions) as session:
        run = session.get(FedRun, run_id)
        if request_id is not None:
            run.airlock = request_id
        if planned is not None:
            run.config = {**run.config, "rounds_planned": planned}
        run.updated_at = _now()


def orphaned(run: FedRun) -> bool:
    """A run "running" that no task of this process drives (a minute's grace for one
    just started)."""
    updated = run.updated_at if run.updated_at.tzinfo else run.updated_at.replace(tzinfo=UTC)
    return (run.state == "running" and run.id not in _tasks
            and (_now() - updated).total_seconds() > 60)


def load(ctx: AppContext, run_id: str, caller: Principal, action: str = "read") -> FedRun:
    """The run, if the caller may `action` ("read", "cancel") it (policies/jobs `access`,
    as for a job). A run left "running" by a process that no longer drives it ends."""
    with session_scope(ctx.sessions) as session:
        run = session.get(FedRun, run_id)
        if run is not None and orphaned(run):
            run.state, run.reason = "failed", "the hub stopped while the run was running"
            run.updated_at = _now()
        if run is not None:
            session.flush()
            session.expunge(run)
    if run is None:
        raise NotFound(f"no federated run {run_id!r}")
    decide_or_refuse(ctx.policy, ACCESS_POLICY, {
        "action": action, "subject": {"id": caller.id, "roles": list(caller.roles)},
        "job": {"user_id": run.user_id, "pid": run.pid}, "permit": None, "member": False},
        audit=ctx.audit, sessions=ctx.sessions, session=None, actor=caller.id,
        action=f"fed.{action}", object=f"fed:{run_id}",
        refuse=lambda d: Forbidden(d.reason.removeprefix("denied: ").replace("job", "run")))
    return run


def mine(ctx: AppContext, caller: Principal, limit: int = 100) -> list[FedRunView]:
    from sqlalchemy import select
    with session_scope(ctx.sessions) as session:
        runs = session.execute(select(FedRun).where(FedRun.user_id == caller.id)
                               .order_by(FedRun.created_at.desc()).limit(limit)).scalars()
        out = []
        for run in runs:
            if orphaned(run):
                run.state, run.reason = "failed", "the hub stopped while the run was running"
            out.append(view(run))
        return out


async def cancel(ctx: AppContext, run_id: str, caller: Principal) -> FedRunView:
    await run_in_threadpool(load, ctx, run_id, caller, "cancel")
    task = _tasks.get(run_id)
    if task is not None:
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=30)
        except (asyncio.CancelledError, TimeoutError):
            pass
    await run_in_threadpool(finish, ctx, run_id, "cancelled", "cancelled by its user",
                            caller.id)
    return view(await run_in_threadpool(load, ctx, run_id, caller))
