"""`spe audit verify`: the hash chain, the signed checkpoints and the hub's witness together.

A service's own log is checked against its checkpoint rows, its checkpoint file and (at a
node) the heads the hub witnessed; at the centre, `--node` checks the hub's witness of a
node, and with the node's database, the node's log against it. Every signature is checked
with keys from outside the database (spe.audit.checkpoints.trust_for).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spe.audit.checkpoints import (
    Signed,
    SignedHeads,
    Source,
    Trust,
    checkpoint_file,
    compare_chain,
    missing_from_rows,
    signed_heads,
    sources_of,
    trust_for,
)
from spe.audit.models import (
    AuditWitness,
    CentralAuditEntry,
    CentralAuditHead,
    NodeAuditEntry,
    NodeAuditHead,
)
from spe.audit.service import AuditLog, ChainBreak
from spe.db import make_engine, make_sessionmaker
from spe.pki import PkiError
from spe.settings import Settings
from spe.wire.audit import WITNESSED

__all__ = ["Outcome", "VerifyError", "checkpoint_file", "export_witness", "own_log",
           "running_service", "witness_of"]


class VerifyError(RuntimeError):
    """The verification itself cannot be done (no key, an unreadable file): exit 2."""


@dataclass
class Outcome:
    breaks: list[ChainBreak]
    summary: str
    notes: list[str] = field(default_factory=list)
    checked: int = 0  # entries walked

    @property
    def ok(self) -> bool:
        return not self.breaks


def log_for(target: str) -> AuditLog:
    if target == "central":
        return AuditLog(CentralAuditEntry, CentralAuditHead)
    if target == "node":
        return AuditLog(NodeAuditEntry, NodeAuditHead)
    raise VerifyError(f"--target is central or node, not {target!r}")


def own_log(settings: Settings, *, target: str, url: str, name: str, keys: Iterable[Path],
            file: Path | None, witness: Path | None) -> Outcome:
    log_ = log_for(target)
    extra = _read_witness(witness) if witness is not None else []
    with _session(url) as session:
        sources = [*sources_of(session, log_, file), *extra]
        return _check(session, log_, sources, _trust(settings, name, keys, sources))


def witness_of(settings: Settings, *, central_url: str, node_id: str, node_url: str | None,
               keys: Iterable[Path]) -> Outcome:
    with _session(central_url) as central:
        witnessed = _witness_sources(central, node_id)
        recorded = _witness_recorded(central, node_id)
    if not witnessed and not recorded:
        raise VerifyError(f"the hub holds no checkpoint of {node_id!r} (is it a node of "
                          "this hub, and has the witness run?)")
    trust = _trust(settings, node_id, keys, witnessed)
    lost = _witness_lost(witnessed, recorded, trust)
    if node_url is None:
        heads = signed_heads(witnessed, trust)
        return Outcome(_sorted(heads.breaks + lost),
                       f"{heads.verified} checkpoints of {node_id} witnessed, signatures "
                       f"verified (the latest at entry {heads.latest})",
                       ["give --node-database-url to check the node's log against them"])
    with _session(node_url) as session:
        log_ = log_for("node")
        outcome = _check(session, log_, [*sources_of(session, log_, None), *witnessed], trust)
    outcome.breaks = _sorted(outcome.breaks + lost)
    return outcome


def export_witness(central_url: str, node_id: str) -> list[dict[str, str]]:
    with _session(central_url) as session:
        return [s.signed.as_json() for s in _witness_sources(session, node_id)]


def _check(session: Session, log_: AuditLog, sources: list[Source],
           trust: Trust | None) -> Outcome:
    chain = log_.verify(session)
    breaks = list(chain.breaks)
    notes: list[str] = []
    heads = SignedHeads()
    if sources:
        heads = signed_heads(sources, trust)
        breaks += heads.breaks + missing_from_rows(sources)
        if not chain.breaks:  # a broken chain is named by its own walk
            breaks += compare_chain(session, log_, heads)
    elif trust is not None and chain.checked:
        # The service signs its head on every start: a log it wrote has checkpoints.
        breaks.append(ChainBreak(_first_seq(session, log_), f"no signed checkpoint covers "
                                 f"it, although {trust.name} signs its head (checkpoint rows "
                                 "deleted? give --checkpoint-file or --witness)"))
    else:
        notes.append("[yellow]no signed checkpoint found and no key to check one: only the "
                     "hash chain was checked[/yellow]")
    summary = f"{chain.checked} entries verified"
    if heads.verified:
        summary += (f", against {heads.verified} signed checkpoints (the latest at entry "
                    f"{heads.latest})")
        if heads.latest is not None and chain.checked and heads.latest < _last_seq(session,
                                                                                   log_):
            notes.append(f"entries after {heads.latest} are not signed yet (the next "
                         "checkpoint will cover them)")
    return Outcome(_sorted(breaks), summary, notes, chain.checked)


def running_service(session: Session, log_: AuditLog, settings: Settings,
                    name: str) -> Outcome:
    """What a service's own `GET /api/v1/audit/verify` answers: its database's chain and
    checkpoints, and its checkpoint file."""
    sources = sources_of(session, log_, checkpoint_file(settings, name))
    try:
        trust = _trust(settings, name, [], sources)
    except VerifyError as exc:
        return Outcome([ChainBreak(0, str(exc))], "signatures not checked")
    return _check(session, log_, sources, trust)


def _first_seq(session: Session, log_: AuditLog) -> int:
    model = log_.entry_model
    return session.execute(select(model.seq).order_by(model.seq).limit(1)).scalar_one()


def _last_seq(session: Session, log_: AuditLog) -> int:
    head = session.execute(select(log_.head_model.last_seq)
                           .where(log_.head_model.id == 1)).scalar_one_or_none()
    return head or 0


def _sorted(breaks: list[ChainBreak]) -> list[ChainBreak]:
    return sorted(dict.fromkeys(breaks), key=lambda b: b.seq)


def _trust(settings: Settings, name: str, keys: Iterable[Path],
           sources: list[Source]) -> Trust | None:
    if not name:
        if sources:
            raise VerifyError("the log has signed checkpoints: name their signer with --name "
                              "(hub, or the node id)")
        return None
    try:
        trust = trust_for(settings, name, list(keys))
    except PkiError as exc:
        raise VerifyError(str(exc)) from None
    if trust.empty and not sources:
        return None  # nothing signed, and nothing to check a signature with
    if trust.empty:
        raise VerifyError(f"{len(sources)} signed checkpoints and no key of {name} to check "
                          f"them with: set SPE_PKI_DIR (its {name}.crt and ca.crt) or give "
                          "--key")
    return trust


def _witness_sources(session: Session, node_id: str) -> list[Source]:
    rows = session.execute(select(AuditWitness).where(AuditWitness.node_id == node_id)
                           .order_by(AuditWitness.seq, AuditWitness.id)).scalars()
    return [Source(f"the hub's witness row {r.id}", Signed(r.body, r.signature, r.cert))
            for r in rows]


def _witness_recorded(session: Session, node_id: str) -> dict[int, tuple[str, int]]:
    """What the hub's own audit log says it witnessed: seq -> (hash, entry)."""
    entries = session.execute(
        select(CentralAuditEntry).where(CentralAuditEntry.action == WITNESSED)
        .where(CentralAuditEntry.object == f"node:{node_id}")
        .order_by(CentralAuditEntry.seq)).scalars()
    recorded: dict[int, tuple[str, int]] = {}
    for entry in entries:
        try:
            details = json.loads(entry.details)
            recorded[int(details["seq"])] = (str(details["hash"]), entry.seq)
        except (ValueError, KeyError, TypeError):
            continue  # the hub's chain verify names an edited entry
    return recorded


def _witness_lost(witnessed: list[Source], recorded: dict[int, tuple[str, int]],
                  trust: Trust | None) -> list[ChainBreak]:
    """Heads the hub's audit log says it witnessed that its witness rows no longer hold."""
    held = set()
    for src in witnessed:
        try:
            data = src.signed.fields()
        except (ValueError, KeyError, TypeError):
            continue
        held.add((data["seq"], data["hash"]))
    return [ChainBreak(seq, f"its head was witnessed by the hub (central audit entry "
                            f"{entry}) but the witness rows lack it (witness rows deleted)")
            for seq, (hash_, entry) in sorted(recorded.items()) if (seq, hash_) not in held]


def _read_witness(path: Path) -> list[Source]:
    try:
        items: Any = json.loads(path.read_text())
        return [Source(f"the hub's witness, item {i + 1}",
                       Signed(str(it["body"]), str(it["signature"]), str(it["cert"])))
                for i, it in enumerate(items)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VerifyError(f"{path} is not an export of `spe audit witness`: {exc}") from None


@contextlib.contextmanager
def _session(url: str) -> Iterator[Session]:
    """A session on its own engine, disposed afterwards."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()
