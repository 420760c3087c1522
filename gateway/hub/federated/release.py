"""A federated run's final result into the airlock: the only way anything of a run
reaches its researcher. The files (the model or the estimates, the round history with the
privacy spent, the automatic disclosure report) become one airlock request of the run
(its `job_id` is the run's id, its site "hub"), checked like any job's outputs and
reviewed by two output checkers."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from spe.airlock import rules_from_policy
from spe.airlock.review.service import settle_collected, submit_outputs
from spe.db import session_scope
from spe.web import AppContext

SITE = "hub"


def as_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def history(rounds: list[dict], privacy: dict) -> dict:
    """The round history that goes with a result, shaped for the airlock, which checks it
    as it checks any output. By column, not as one record per round: a run's rounds repeat
    their steps and states (a Flower run's train and evaluate, ten times), which as records
    read like record-level data. `steps` numbers the rounds; each node's `states` (a retry
    said in words: a node's attempts would read as a count of people), `reasons`,
    `seconds` and `epsilon` (the privacy spent so far), one per round; each metric's pooled
    value per round as `mean <name>` (those held back from the run's view too: Rounds.send
    `hold`); null where a round has none. Without the rounds' timestamps: exact dates are
    blocked, and when a round ran says nothing of the result."""
    rounds = list(rounds or [])
    nodes = sorted({n for r in rounds for n in (r.get("nodes") or {})})
    metrics = sorted({m for r in rounds for m in _metrics(r)} - {"num-examples"})

    def per_node(node: str, key: str) -> list:
        return [(r.get("nodes") or {}).get(node, {}).get(key) for r in rounds]

    def seconds(node: str) -> list:
        return [(r.get("held_seconds") or {}).get(node, (r.get("nodes") or {}).get(node, {})
                                                  .get("seconds")) for r in rounds]

    def state(seen: dict) -> str | None:
        if not seen:
            return None
        attempts, word = seen.get("attempts", 1), seen.get("state", "")
        return word if attempts <= 1 else f"{word} after {_times(attempts)}"

    return {
        "steps": [r.get("round") for r in rounds],
        "kinds": [r.get("kind") for r in rounds],
        "nodes": {n: {"states": [state((r.get("nodes") or {}).get(n) or {}) for r in rounds],
                      "reasons": per_node(n, "reason"), "seconds": seconds(n),
                      "epsilon": per_node(n, "epsilon")} for n in nodes},
        "metrics": {f"mean {m}": [_metrics(r).get(m) for r in rounds] for m in metrics},
        "privacy": privacy or {}}


def _times(attempts: int) -> str:
    words = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    return f"{words.get(attempts, 'several')} attempts"


def _metrics(entry: dict) -> dict:
    return {**(entry.get("metrics") or {}), **(entry.get("held_metrics") or {})}


def release(ctx: AppContext, *, run_id: str, pid: str, requester: str,
            files: dict[str, bytes]) -> str:
    """The airlock request id holding `files` (name -> bytes) for review."""
    storage = ctx.settings.resolved_airlock_dir
    storage.mkdir(parents=True, exist_ok=True, mode=0o700)
    incoming = Path(tempfile.mkdtemp(prefix=".fed-", dir=storage))
    try:
        for name, data in files.items():
            (incoming / name).write_bytes(data)
        with session_scope(ctx.sessions) as session:
            request = submit_outputs(
                session, job_id=run_id, node_id=SITE, pid=pid, requester=requester,
                output_dir=incoming, storage_dir=storage, rules=rules_from_policy(ctx.policy),
                policy=ctx.policy, audit=ctx.audit, awaiting=[])
            request.sites = [{**s, "outcome": "the federated run's result"}
                             for s in request.sites]
            session.flush()
            settle_collected(session, run_id, [], policy=ctx.policy, audit=ctx.audit)
            return request.id
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
